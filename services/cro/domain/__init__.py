"""CRO vocabulary and submission rules: pure Python, no I/O, no grpc."""
