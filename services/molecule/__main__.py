"""`python -m services.molecule`: MoleculeService, SearchService, ImportService and LibraryService, built by
bootstrap.py and run by services.runtime.process; CSV chunks: `python -m services.molecule.worker`."""

from services.molecule.bootstrap import MIGRATIONS, build_server
from services.molecule.settings import MoleculeSettings
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("molecule", build_server, settings=MoleculeSettings, migrations=MIGRATIONS)
