from services.cro.bootstrap import MIGRATIONS, CroSettings, build_server
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("cro", build_server, settings=CroSettings, migrations=MIGRATIONS)
