"""The CRO service's use cases."""
