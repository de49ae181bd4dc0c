"""Benchmarks, run by `make bench` (`python -m bench`). Each starts its own isolated mesh, so it never
disturbs (or is disturbed by) a `make run` on the same machine, and prints figures; nothing asserts on
timings."""
