"""The gateway policy (policy.toml): read by the renderer and by the OpenAPI generator."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

POLICY = Path(__file__).resolve().parent / "policy.toml"


def load_policy(path: Path = POLICY) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)
