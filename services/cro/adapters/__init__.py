"""Adapters of the CRO service: the predicted-vs-measured figures (plots.py)."""
