"""The PredictionService servicer: proto ↔ use cases, nothing else."""

from services.prediction.server.predictions import PredictionServicer

__all__ = ["PredictionServicer"]
