from services.identity.bootstrap import COMMANDS, MIGRATIONS, IdentitySettings, build_server
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("identity", build_server, settings=IdentitySettings, migrations=MIGRATIONS, commands=COMMANDS)
