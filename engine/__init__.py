"""Molbridge AI engine: an external prediction process with a REST job contract.

Runs in its own virtual environment (.venv-engine); nothing here is imported by the mesh.
"""
