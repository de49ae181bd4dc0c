"""Blinded sample codes (issue 11): the CRO sees `S-7F3K-01`, never the structure behind it. Pure.

A submission draws one random prefix from an alphabet without look-alikes (no 0/O, 1/I/L, U/V), and
numbers its molecules after it: codes are unique within the submission by construction, and a prefix
tells one submission's samples from another's on the bench.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence

from services.runtime.errors import NotFoundError, ValidationError

SAMPLE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
PREFIX_LENGTH = 4
CODE_PATTERN = re.compile(rf"^S-([{SAMPLE_ALPHABET}]{{{PREFIX_LENGTH}}})-(\d{{2,}})$")


def new_sample_prefix(choose: Callable[[str], str] = secrets.choice) -> str:
    """A fresh per-submission prefix; `choose` picks one character (a seeded `random.Random().choice` in tests)."""
    return "".join(choose(SAMPLE_ALPHABET) for _ in range(PREFIX_LENGTH))


def check_sample_prefix(prefix: str) -> str:
    if len(prefix) != PREFIX_LENGTH or any(c not in SAMPLE_ALPHABET for c in prefix):
        problem = f"must be {PREFIX_LENGTH} characters of {SAMPLE_ALPHABET}"
        raise ValidationError(f"sample_prefix: {problem}", field_violations=[("sample_prefix", problem)])
    return prefix


def sample_code(prefix: str, index: int) -> str:
    """The code of the `index`-th molecule (from 1): two digits at least, more when there are 100+."""
    return f"S-{check_sample_prefix(prefix)}-{index:02d}"


def sample_codes(prefix: str, molecule_ids: Sequence[str]) -> dict[str, str]:
    """molecule id → sample code, numbered in the submission's molecule order."""
    return {molecule_id: sample_code(prefix, i) for i, molecule_id in enumerate(molecule_ids, start=1)}


def molecule_for_code(codes: dict[str, str], code: str) -> str:
    """Decodes a sample code (results come back by code) into the molecule id, for the pharma side only."""
    for molecule_id, known in codes.items():
        if known == code.strip().upper():
            return molecule_id
    raise NotFoundError(f"no sample {code!r} in this submission", detail="SAMPLE_NOT_FOUND")
