"""Clients of other services and systems, behind the small interfaces the use cases name."""
