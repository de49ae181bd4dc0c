"""A partner's first script with molbridge-client: log in, list every user page by page, handle a typed
error. Run it with the wheel installed (`pip install molbridge_client-*.whl`):

    MOLBRIDGE_TARGET=127.0.0.1:8080 MOLBRIDGE_EMAIL=me@example.com MOLBRIDGE_PASSWORD=… python example.py

With MOLBRIDGE_API_KEY set instead, it acts with that key; MOLBRIDGE_TLS=1 connects with TLS."""

from __future__ import annotations

import os
import sys
import uuid

from molbridge.identity.v1 import identity_service_pb2 as identity
from molbridge.molecule.v1 import molecule_service_pb2 as molecules

from molbridge_client import AuthenticationError, Client, NotFoundError, Unavailable


def main() -> int:
    target = os.environ.get("MOLBRIDGE_TARGET", "127.0.0.1:8080")
    tls = os.environ.get("MOLBRIDGE_TLS") == "1"
    with Client(target, tls=tls, api_key=os.environ.get("MOLBRIDGE_API_KEY")) as client:
        try:
            if not client.api_key:
                client.login(
                    os.environ["MOLBRIDGE_EMAIL"],
                    os.environ["MOLBRIDGE_PASSWORD"],
                    mfa_code=lambda: os.environ.get("MOLBRIDGE_MFA_CODE") or input("MFA code: "),
                )
            me = client.call(client.identity.GetMe, identity.GetMeRequest()).data
            print(f"logged in as {me.email}")

            # Every user, 20 per call; the iterator asks for the next page until meta.total is reached.
            everyone = identity.ListUsersRequest(sort="email")
            for user in client.paginate(client.identity.ListUsers, everyone, page_size=20):
                print(f"{user.email}\t{','.join(user.roles)}")

            try:
                client.call(client.molecules.GetMolecule, molecules.GetMoleculeRequest(id=str(uuid.uuid4())))
            except NotFoundError as err:
                print(f"as expected, no such molecule: {err.reason}")
        except AuthenticationError as err:
            print(f"login refused: {err.message}", file=sys.stderr)
            return 3
        except Unavailable as err:
            print(f"the gateway at {target} is unavailable: {err.message}", file=sys.stderr)
            return 9
    return 0


if __name__ == "__main__":
    sys.exit(main())
