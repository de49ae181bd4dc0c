"""`python -m services.prediction`: the PredictionService server (composition in bootstrap.py)."""

from services.prediction.bootstrap import run_server

if __name__ == "__main__":
    run_server()
