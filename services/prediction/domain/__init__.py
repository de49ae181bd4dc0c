"""Prediction rules in plain Python: jobs and batches, the model catalogue check, the desirability
score, the engine circuit breaker. No I/O."""
