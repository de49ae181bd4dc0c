"""The molecule service as another service sees it: a gRPC client of its public API, called with the
caller's own credentials (so the molecule service applies its organization scoping)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from molbridge.molecule.v1 import molecule_pb2
from molbridge.molecule.v1 import molecule_service_pb2 as molecule_pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as molecule_grpc

from services.runtime import telemetry
from services.runtime.errors import ValidationError
from services.runtime.peer_errors import peer_failure

BATCH_GET_LIMIT = 1000  # BatchGetMolecules' limit
CREDENTIAL_HEADERS = ("authorization", "x-api-key")
CALL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class NumericValue:
    """One numeric property value of a molecule; `source` is the Property.Source name (CALCULATED,
    IMPORTED, PREDICTED, EXPERIMENTAL)."""

    name: str
    source: str
    value: float


@dataclass(frozen=True)
class MoleculeRecord:
    id: str
    canonical_smiles: str
    numeric_values: tuple[NumericValue, ...]
    formula: str = ""
    molecular_weight: float | None = None
    inchi_key: str = ""
    registration_number: str = ""


def source_name(source: int) -> str:
    """A Property.Source value as its name (3 → PREDICTED)."""
    return molecule_pb2.Property.Source.Name(source)  # type: ignore[arg-type]


def forwarded_credentials(metadata: Sequence[tuple[str, str | bytes]] | None) -> dict[str, str]:
    """The caller's credentials from incoming gRPC metadata, to call another service on its behalf."""
    return {k: v for k, v in metadata or () if k in CREDENTIAL_HEADERS and isinstance(v, str)}


class MoleculeClient:
    def __init__(self, address: str) -> None:
        self._channel = telemetry.traced_channel(address)
        self._stub = molecule_grpc.MoleculeServiceStub(self._channel)

    async def close(self) -> None:
        await self._channel.close()

    async def batch_get(
        self, ids: Sequence[str], credentials: Mapping[str, str]
    ) -> tuple[list[MoleculeRecord], list[str]]:
        """The caller's molecules found (request order) and the ids not found. Malformed ids are a
        ValidationError; a molecule service that cannot answer peer_failure's (503 while it is down)."""
        found: list[MoleculeRecord] = []
        missing: list[str] = []
        metadata = tuple(credentials.items())
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            try:
                reply = await self._stub.BatchGetMolecules(
                    molecule_pb.BatchGetMoleculesRequest(ids=ids[start : start + BATCH_GET_LIMIT]),
                    metadata=metadata,
                    timeout=CALL_TIMEOUT_S,
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    raise ValidationError(error.details() or "invalid molecule ids") from error
                raise peer_failure(error, "molecule", "read the molecules") from error
            found += [_record(m) for m in reply.data]
            missing += reply.not_found_ids
        return found, missing


def _record(molecule: molecule_pb2.Molecule) -> MoleculeRecord:
    values = tuple(
        NumericValue(p.name, source_name(p.source), p.value.number_value)
        for p in molecule.properties
        if p.value.WhichOneof("kind") == "number_value"
    )
    return MoleculeRecord(
        molecule.id,
        molecule.canonical_smiles,
        values,
        formula=molecule.formula,
        molecular_weight=molecule.molecular_weight or None,
        inchi_key=molecule.inchi_key,
        registration_number=molecule.registration_number,
    )
