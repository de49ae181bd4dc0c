"""Transitional alias of domain/score.py, only for the molecule service's copy of the score, which is
being removed (the score now travels in PredictionCompleted). Delete with that import."""

from services.prediction.domain.score import SCORE_MODEL, SCORE_PROPERTY, SCORE_VERSION, desirability

__all__ = ["SCORE_MODEL", "SCORE_PROPERTY", "SCORE_VERSION", "desirability"]
