"""Document vocabulary and rules: pure Python, no I/O."""
