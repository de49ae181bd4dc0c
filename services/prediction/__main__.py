from services.prediction.bootstrap import MIGRATIONS, PredictionSettings, build_server
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("prediction", build_server, settings=PredictionSettings, migrations=MIGRATIONS)
