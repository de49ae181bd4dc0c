"""Proto ↔ domain mappings the molecule servicers share: the Molecule message, the filter query."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf import struct_pb2
from molbridge.molecule.v1 import molecule_pb2
from molbridge.molecule.v1 import molecule_service_pb2 as pb

from services.molecule.index.query import MoleculeQuery, RawFilter, parse_query
from services.molecule.store.molecule_views import MoleculeView
from services.runtime.protomap import enum_name, enum_number, timestamp


def _value(value: float | str | None) -> struct_pb2.Value:
    if value is None:
        return struct_pb2.Value(null_value=struct_pb2.NULL_VALUE)
    if isinstance(value, str):
        return struct_pb2.Value(string_value=value)
    return struct_pb2.Value(number_value=value)


def molecule_pb(view: MoleculeView) -> molecule_pb2.Molecule:
    """The one Molecule mapping (MoleculeService's lists use it too)."""
    return molecule_pb2.Molecule(
        id=view.id, registration_number=view.registration_number, name=view.name, smiles=view.smiles,
        canonical_smiles=view.canonical_smiles,
        inchi_key=view.inchi_key, formula=view.formula, molecular_weight=view.molecular_weight,
        status=enum_number(molecule_pb2.Molecule.Status, view.status),
        properties=[
            molecule_pb2.Property(
                name=p.name, value=_value(p.value), units=p.units,
                source=enum_number(molecule_pb2.Property.Source, p.source),
            )
            for p in view.properties
        ],
        flags=[
            molecule_pb2.Flag(
                type=enum_number(molecule_pb2.Flag.Type, f.type),
                level=enum_number(molecule_pb2.Flag.Level, f.level),
                notes=f.notes, user_id=f.user_id, created_at=timestamp(f.created_at),
            )
            for f in view.flags
        ],
        library_ids=view.library_ids, organization_id=view.organization_id, created_by=view.created_by,
        created_at=timestamp(view.created_at), updated_at=timestamp(view.updated_at),
    )


# Metadata that proves who the caller is, forwarded when the service asks identity on their behalf.
CREDENTIAL_HEADERS = ("authorization", "x-api-key")


def caller_credentials(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str]]:
    """The caller's credentials from its call metadata, to call another service on its behalf."""
    return [(k, v) for k, v in metadata or () if k in CREDENTIAL_HEADERS and isinstance(v, str)]


def python_value(value: struct_pb2.Value | None) -> Any:
    """google.protobuf.Value → None, float, str, bool, list (a struct stays a dict: rejected as a value)."""
    if value is None:
        return None
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [python_value(v) for v in value.list_value.values]
    if kind == "struct_value":
        return {k: python_value(v) for k, v in value.struct_value.fields.items()}
    return None


def source_name(value: int) -> str:
    return enum_name(molecule_pb2.Property.Source, value)


def flag_name(value: int) -> str:
    return enum_name(molecule_pb2.Flag.Type, value)


def status_name(value: int) -> str:
    return enum_name(molecule_pb2.Molecule.Status, value)


def query_from_proto(
    filters: Sequence[pb.PropertyFilter],
    flags: Sequence[int],
    statuses: Sequence[int],
    library_id: str,
    sort_by: str = "",
    sort_desc: bool = False,
) -> MoleculeQuery:
    """A filter query's proto fields (FilterMolecules, and the searches that combine with filters)."""
    return parse_query(
        filters=[
            RawFilter(
                f.property,
                f.operator,
                python_value(f.value) if f.HasField("value") else None,
                source_name(f.source),
            )
            for f in filters
        ],
        flags=[flag_name(f) for f in flags],
        statuses=[status_name(s) for s in statuses],
        library_id=library_id,
        sort_by=sort_by,
        sort_desc=sort_desc,
    )
