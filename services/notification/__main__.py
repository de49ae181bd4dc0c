from services.notification.bootstrap import MIGRATIONS, NotificationSettings, build_server
from services.runtime.process import run_process

if __name__ == "__main__":  # importing this module must not start a server
    run_process("notification", build_server, settings=NotificationSettings, migrations=MIGRATIONS)
