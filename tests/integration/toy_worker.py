"""A worker with nothing to do but report health, started by tests through `python -m`."""

from services.runtime.process import Process, run_process

if __name__ == "__main__":
    run_process("toy-worker", lambda settings: Process())
