from services.document.bootstrap import MIGRATIONS, DocumentSettings, build_server
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("document", build_server, settings=DocumentSettings, migrations=MIGRATIONS)
