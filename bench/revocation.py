"""What the revocation check costs each request: token verification with and without it.

    python -m bench.revocation [--calls 20000] [--revoked 10000]

A real EdDSA access token is verified by `TokenVerifier.verify` (what every service's interceptor does
per request) against an in-memory JWKS: once with no revocation map, once with a map holding
`--revoked` users and as many sessions (far more than 15 minutes of revocations would ever hold).
The map lookup alone is timed too. Figures are printed; nothing asserts on them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.runtime.auth import AUDIENCE, ISSUER, TokenVerifier
from services.runtime.revocation import Revocations


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.revocation")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--revoked", type=int, default=10_000)
    return parser.parse_args(argv)


async def per_call_us(verifier: TokenVerifier, token: str, calls: int) -> float:
    await verifier.verify(token)  # JWKS fetched once, outside the timing
    best = float("inf")
    for _ in range(3):  # best of three rounds: the machine is shared
        started = time.perf_counter()
        for _ in range(calls):
            await verifier.verify(token)
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


async def run(args: argparse.Namespace) -> dict[str, float]:
    key = Ed25519PrivateKey.generate()
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="EdDSA", use="sig")
    now = time.time()
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": str(uuid.uuid4()), "org": "o", "roles": ["pharma_admin"],
         "iat": int(now), "iat_ms": int(now * 1000), "exp": int(now) + 900, "sid": str(uuid.uuid4())},
        key, algorithm="EdDSA", headers={"kid": "k1"},
    )

    async def jwks() -> dict[str, object]:
        return {"keys": [jwk]}

    revocations = Revocations()
    for _ in range(args.revoked):
        revocations.revoke(not_before=now, user_id=str(uuid.uuid4()), session_id=str(uuid.uuid4()))
    without = await per_call_us(TokenVerifier(jwks), token, args.calls)
    with_map = await per_call_us(TokenVerifier(jwks, revocations), token, args.calls)
    started = time.perf_counter()
    for _ in range(args.calls):
        revocations.is_revoked("someone", "some-session", now)
    lookup = (time.perf_counter() - started) / args.calls * 1e6
    return {"verify_without_us": without, "verify_with_us": with_map, "lookup_us": lookup}


def main() -> None:
    args = parse_args()
    figures = asyncio.run(run(args))
    added = figures["verify_with_us"] - figures["verify_without_us"]
    print(f"token verification, no revocation map:  {figures['verify_without_us']:8.2f} µs/request")
    print(f"token verification, {args.revoked} revoked users + sessions: {figures['verify_with_us']:8.2f} µs/request")
    print(f"revocation lookup alone:                {figures['lookup_us']:8.3f} µs/request")
    print(f"difference (within noise when ≈ 0):     {added:8.2f} µs/request")

if __name__ == "__main__":
    main()
