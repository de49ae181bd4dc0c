"""`python -m services.molecule.worker`: the CSV worker (bootstrap.build_worker); run as many as you like."""

from services.molecule.bootstrap import MIGRATIONS, build_worker
from services.molecule.settings import MoleculeSettings
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a worker
    run_process("molecule-worker", build_worker, settings=MoleculeSettings, migrations=MIGRATIONS)
