"""Document use cases and the ports they need."""
