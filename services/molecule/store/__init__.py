"""The molecule service's storage: tables, repositories, read models and its unit of work; the only SQL."""

from services.molecule.store.tables import SCHEMA, metadata

__all__ = ["SCHEMA", "metadata"]  # the migrations read the schema from here
