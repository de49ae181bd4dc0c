"""Molecule commands: `search --similar|--substructure|--exact` and `molecules get|image`."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import Message
from molbridge.molecule.v1 import molecule_pb2 as mol_pb
from molbridge.molecule.v1 import molecule_service_pb2 as pb
from molbridge.molecule.v1 import molecule_service_pb2_grpc as pb_grpc
from molbridge.molecule.v1 import search_service_pb2 as search_pb
from molbridge.molecule.v1 import search_service_pb2_grpc as search_grpc

from cli import output
from cli.app import add_command
from cli.client import CliError, Gateway
from cli.imports import resolve_library

SMILES_WIDTH = 50
INCHI_KEY = re.compile(r"^[A-Z]{14}-[A-Z]{10}-[A-Z]$")
IMAGE_FORMATS = {".svg": "svg", ".png": "png"}


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_value(value: struct_pb2.Value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return f"{value.number_value:.6g}"
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    return "-"


def enum_name(message: Message, field: str) -> str:
    return output.enum_word(message, field).lower()


def molecule_rows(molecules: Sequence[mol_pb.Molecule], *, similarity: bool, smiles_width: int) -> list[list[str]]:
    return [
        [m.id, m.name or "-", truncate(m.canonical_smiles, smiles_width)]
        + ([f"{m.similarity:.3f}"] if similarity else [])
        for m in molecules
    ]


def molecule_headers(*, similarity: bool) -> list[str]:
    return ["ID", "NAME", "CANONICAL SMILES"] + (["SIMILARITY"] if similarity else [])


def search_summary(meta: search_pb.SearchMeta, shown: int) -> str:
    line = f"{shown} shown of {meta.total:,} found; searched {meta.searched:,} molecules"
    line += f" in {meta.elapsed_ms:.1f} ms"
    if meta.truncated:
        line += "; stopped at the time bound: the total is a lower bound"
    return line


def search(args: argparse.Namespace, gw: Gateway) -> None:
    stub = gw.stub(search_grpc.SearchServiceStub)
    library_id = resolve_library(gw, args.library, create=False).id if args.library else ""
    answer: Any
    if args.exact is not None:
        if args.library:
            raise CliError("--library applies to --similar and --substructure only")
        query = args.exact.strip()
        key = query.upper() if INCHI_KEY.match(query.upper()) else ""
        request = (
            search_pb.SearchExactRequest(inchi_key=key) if key else search_pb.SearchExactRequest(smiles=query)
        )
        answer = gw.call(stub.SearchExact, request)
    elif args.similar is not None:
        request_similar = search_pb.SearchSimilarRequest(
            smiles=args.similar, threshold=args.threshold, limit=args.limit, library_id=library_id
        )
        answer = gw.call(stub.SearchSimilar, request_similar)
    else:
        request_sub = search_pb.SearchSubstructureRequest(
            smarts=args.substructure, limit=args.limit, library_id=library_id
        )
        answer = gw.call(stub.SearchSubstructure, request_sub)
    if args.json:
        print(output.as_json(answer))
        return
    similarity = args.similar is not None
    summary = None if args.exact is not None else search_summary(answer.meta, len(answer.data))
    if not answer.data and args.output != "csv":
        print("\n".join(["No molecule found", *([summary] if summary else [])]))
        return
    output.listing(
        args,
        molecule_headers(similarity=similarity),
        molecule_rows(answer.data, similarity=similarity, smiles_width=SMILES_WIDTH),
        summary,
        csv_rows=molecule_rows(answer.data, similarity=similarity, smiles_width=sys.maxsize),
    )


def get_molecule(args: argparse.Namespace, gw: Gateway) -> None:
    answer = gw.call(gw.stub(pb_grpc.MoleculeServiceStub).GetMolecule, pb.GetMoleculeRequest(id=args.id))
    if args.json:
        print(output.as_json(answer))
        return
    m = answer.data
    print(
        output.fields(
            [
                ("id", m.id),
                ("name", m.name or "-"),
                ("smiles", m.smiles),
                ("canonical smiles", m.canonical_smiles),
                ("inchikey", m.inchi_key),
                ("formula", m.formula),
                ("molecular weight", f"{m.molecular_weight:.3f} g/mol"),
                ("status", enum_name(m, "status")),
                ("libraries", ", ".join(m.library_ids) or "-"),
                ("flags", ", ".join(_flag(f) for f in m.flags) or "-"),
                ("created", output.timestamp(m.created_at)),
                ("updated", output.timestamp(m.updated_at)),
            ]
        )
    )
    if m.properties:
        print()
        rows = [
            [
                p.name,
                format_value(p.value),
                p.units or "-",
                enum_name(p, "source"),
            ]
            for p in m.properties
        ]
        print(output.table(["PROPERTY", "VALUE", "UNITS", "SOURCE"], rows))


def _flag(flag: mol_pb.Flag) -> str:
    name = enum_name(flag, "type")
    if flag.level:
        name += f" ({enum_name(flag, 'level')})"
    return name


def image_format(path: Path) -> str:
    """ "svg" or "png", from the file's extension."""
    found = IMAGE_FORMATS.get(path.suffix.lower())
    if found is None:
        raise CliError(f"{path}: the file name must end in .svg or .png")
    return found


def molecule_image(args: argparse.Namespace, gw: Gateway) -> None:
    request = pb.GetMoleculeImageRequest(
        id=args.id, format=image_format(args.out), width=args.width, height=args.height
    )
    body = gw.call(gw.stub(pb_grpc.MoleculeServiceStub).GetMoleculeImage, request)
    output.write_file(args.out, body.data)
    print(f"Wrote {args.out} ({len(body.data):,} bytes, {body.content_type or 'unknown type'})")


def register(subparsers: Any) -> None:
    cmd = add_command(subparsers, "search", "search molecules by structure", gateway=search)
    query = cmd.add_mutually_exclusive_group(required=True)
    query.add_argument("--similar", metavar="SMILES", help="Tanimoto similarity (Morgan r=2, 2048 bits)")
    query.add_argument(
        "--substructure", metavar="SMARTS", help="molecules containing this SMARTS (or SMILES)"
    )
    query.add_argument("--exact", metavar="SMILES_OR_INCHIKEY", help="the molecule with this structure")
    cmd.add_argument(
        "--threshold", type=float, default=0.7, help="--similar: minimum similarity 0-1 (default 0.7)"
    )
    cmd.add_argument("--limit", type=int, default=0, help="most hits (server default 50, max 1000)")
    cmd.add_argument("--library", metavar="NAME", help="only molecules of this library (name or id)")

    molecules = subparsers.add_parser("molecules", help="read molecules").add_subparsers(
        dest="molecules_command", required=True, metavar="COMMAND"
    )
    cmd = add_command(molecules, "get", "show a molecule and its properties", gateway=get_molecule)
    cmd.add_argument("id", metavar="ID")

    cmd = add_command(
        molecules, "image", "save a depiction of a molecule (SVG or PNG)", gateway=molecule_image
    )
    cmd.add_argument("id", metavar="ID")
    cmd.add_argument("--out", type=Path, required=True, metavar="FILE", help="FILE.svg or FILE.png")
    cmd.add_argument("--width", type=int, default=0, help="pixels (server default 300)")
    cmd.add_argument("--height", type=int, default=0, help="pixels (server default 300)")
