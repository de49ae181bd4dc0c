"""Prediction use cases: check role → load → ask the domain → save → record."""
