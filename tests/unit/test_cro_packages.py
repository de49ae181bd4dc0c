"""The submission package manifest (services.cro.domain.packages): canonical bytes, the same whatever the
order facts come in, named by their SHA-256."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from services.cro.domain.packages import PackagedDocument, PackagedMolecule, build_package, canonical_json
from services.cro.domain.submissions import Submission
from services.cro.domain.vocabulary import SubmissionStatus

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
SUBMISSION = Submission(
    id="0b9f6d8e-0000-4000-8000-000000000001", organization_id="pharma", cro_organization_id="cro",
    service_id="svc", service_type="ADME", name="Panel ü", created_by="u-1", sample_prefix="7F3K", currency="EUR",
    status=SubmissionStatus.SUBMITTED, specifications={"temperature": 37, "assays": ["a", "b"]},
    budget=Decimal("1000.00"), step_times={SubmissionStatus.SUBMITTED: AT},
)
MOLECULES = [
    PackagedMolecule("m-1", "S-7F3K-01", "MOL-000001", "CCO", "LFQSCWFLJHTTHZ-UHFFFAOYSA-N", "C2H6O", 46.069, "10 mM"),
    PackagedMolecule("m-2", "S-7F3K-02", "MOL-000002", "c1ccccc1O", "ISWSIDIOOBJBQZ-UHFFFAOYSA-N", "C6H6O", 94.113),
]
DOCUMENTS = [
    PackagedDocument("d-2", "NON_DISCLOSURE_AGREEMENT", 2, "aa" * 32),
    PackagedDocument("d-1", "MATERIAL_TRANSFER_AGREEMENT", 2, "bb" * 32),
]


def test_the_manifest_is_canonical_json_named_by_its_hash() -> None:
    package = build_package(SUBMISSION, service_name="ADME panel", molecules=MOLECULES, documents=DOCUMENTS)
    assert package.data == json.dumps(
        package.manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    assert b": " not in package.data and b", " not in package.data and "Panel ü".encode() in package.data
    assert package.sha256 == hashlib.sha256(package.data).hexdigest()
    assert package.storage_key == f"cro/submissions/{SUBMISSION.id}/package-{package.sha256}.json"
    manifest = package.manifest
    assert manifest["submission"]["submitted_at"] == AT.isoformat() and manifest["submission"]["budget"] == "1000.00"
    assert [m["sample_code"] for m in manifest["molecules"]] == ["S-7F3K-01", "S-7F3K-02"]
    assert [d["document_type"] for d in manifest["documents"]] == [
        "MATERIAL_TRANSFER_AGREEMENT", "NON_DISCLOSURE_AGREEMENT"
    ]


def test_the_same_facts_give_the_same_bytes() -> None:
    first = build_package(SUBMISSION, service_name="ADME panel", molecules=MOLECULES, documents=DOCUMENTS)
    reordered = replace(SUBMISSION, specifications={"assays": ["a", "b"], "temperature": 37})
    again = build_package(reordered, service_name="ADME panel", molecules=MOLECULES, documents=DOCUMENTS[::-1])
    assert again.data == first.data and again.sha256 == first.sha256
    changed = build_package(SUBMISSION, service_name="ADME panel", molecules=MOLECULES[:1], documents=DOCUMENTS)
    assert changed.sha256 != first.sha256


def test_canonical_json_sorts_every_level() -> None:
    assert canonical_json({"b": {"d": 1, "c": [2, {"f": 0, "e": None}]}, "a": "é"}) == (
        '{"a":"é","b":{"c":[2,{"e":null,"f":0}],"d":1}}'.encode()
    )
