"""Generated documents: every template rendered for real (Jinja2 + WeasyPrint + RDKit), read back with pypdf."""

from __future__ import annotations

import io
import re

import pypdf
import pytest

from services.document.adapters.templates import MAX_MOLECULES, JinjaTemplates
from services.document.domain.vocabulary import DocumentType
from services.document.service.ports import MoleculeRow
from services.runtime.errors import NotFoundError, ValidationError

PARTIES = {
    "pharma_organization": "Helix Pharmaceuticals AG",
    "pharma_address": "Grenzacherstrasse 7, 4058 Basel, Switzerland",
    "pharma_signatory_name": "Dr. Ada Brenner",
    "pharma_signatory_title": "VP Medicinal Chemistry",
    "cro_organization": "Quantil Labs Inc.",
    "cro_address": "200 Technology Square, Cambridge, MA 02139, USA",
    "cro_signatory_name": "Mark Osei",
    "cro_signatory_title": "Chief Operating Officer",
    "effective_date": "2026-03-02",
}
SUBMISSION = {"submission_name": "EGFR series C", "submission_id": "sub_7Q2M"}
FIELDS = {
    "nda": {**PARTIES, "term_years": "2", "governing_law": "the State of New York"},
    "mta": {**PARTIES, **SUBMISSION, "term_years": "1", "governing_law": "Switzerland"},
    "service_agreement": {
        **PARTIES,
        **SUBMISSION,
        "governing_law": "Switzerland",
        "service_type": "METABOLIC_STABILITY",
        "price": "48200.5",
        "currency": "CHF",
        "turnaround_days": "28",
        "line_items": "Microsomal stability, human and rat | 40000\nLC-MS/MS method set-up | 8200.50",
    },
    "experiment_specification": {
        "pharma_organization": PARTIES["pharma_organization"],
        "cro_organization": PARTIES["cro_organization"],
        "pharma_signatory_name": PARTIES["pharma_signatory_name"],
        "effective_date": "2026-03-02",
        **SUBMISSION,
        "service_type": "METABOLIC_STABILITY",
        "assay": "Intrinsic clearance in pooled human liver microsomes",
        "conditions": "1 uM compound, 0.5 mg/mL protein, 37 C, time points 0-45 min",
    },
}
MOLECULES = (
    MoleculeRow(label="HLX-101", smiles="CC(=O)Oc1ccccc1C(=O)O", amount="5 mg"),
    MoleculeRow(label="HLX-102", smiles="Cn1cnc2c1c(=O)n(C)c(=O)n2C", formula="C8H10N4O2", molecular_weight=194.19),
    MoleculeRow(label="HLX-103-BLIND", formula="C17H19NO3", molecular_weight=285.34, amount="2 mg"),
)


@pytest.fixture(scope="module")
def renderer() -> JinjaTemplates:
    return JinjaTemplates()


def text_of(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join((page.extract_text() or "").split()) for page in reader.pages)


def pdf_a_part(pdf: bytes) -> str:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    metadata = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode("utf-8")
    match = re.search(r'pdfaid:part="(\d)"', metadata)
    return match.group(1) if match else ""


def depictions(pdf: bytes) -> int:
    """WeasyPrint draws an SVG image inline, clipped to its box: count the 4:3 boxes of the structure cells."""
    count = 0
    for page in pypdf.PdfReader(io.BytesIO(pdf)).pages:
        content = page.get_contents()
        data = content.get_data() if content is not None else b""
        for width, height in re.findall(rb"[-\d.]+ [-\d.]+ ([\d.]+) ([\d.]+) re\s+W\s+n", data):
            w, h = float(width), float(height)
            count += w > 100 and abs(w / h - 4 / 3) < 0.01
    return count


def test_the_catalogue_lists_the_four_templates_with_their_fields(renderer: JinjaTemplates) -> None:
    infos = {info.name: info for info in renderer.templates()}
    assert {name: info.document_type for name, info in infos.items()} == {
        "nda": DocumentType.NON_DISCLOSURE_AGREEMENT,
        "mta": DocumentType.MATERIAL_TRANSFER_AGREEMENT,
        "service_agreement": DocumentType.SERVICE_AGREEMENT,
        "experiment_specification": DocumentType.EXPERIMENT_SPECIFICATION,
    }
    price = next(field for field in infos["service_agreement"].fields if field.name == "price")
    assert price.required and "decimal" in price.description
    line_items = next(field for field in infos["service_agreement"].fields if field.name == "line_items")
    assert not line_items.required
    for name, fields in FIELDS.items():  # the test values fill every required field
        assert {f.name for f in infos[name].fields if f.required} <= set(fields)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_each_template_renders_its_fields_and_molecules_as_pdf_a(renderer: JinjaTemplates, name: str) -> None:
    pdf = renderer.render(name, FIELDS[name], MOLECULES)

    text = text_of(pdf)
    assert "Helix Pharmaceuticals AG" in text and "Quantil Labs Inc." in text
    assert "Dr. Ada Brenner" in text
    assert "2 March 2026" in text
    assert "HLX-101" in text and "HLX-102" in text and "HLX-103-BLIND" in text
    assert "C9H8O4" in text  # computed from the structure when not given
    assert "285.34" in text  # the blinded sample's weight as given
    assert pdf_a_part(pdf) == "3"
    assert depictions(pdf) == 2  # the blinded sample has no structure drawn
    assert "Page 1 of" in text


def test_each_template_prints_what_it_is_about(renderer: JinjaTemplates) -> None:
    texts = {name: text_of(renderer.render(name, fields)) for name, fields in FIELDS.items()}
    assert "Mutual Non-Disclosure Agreement" in texts["nda"]
    assert "2 years" in texts["nda"] and "the State of New York" in texts["nda"]
    assert "Mark Osei, Chief Operating Officer" in texts["nda"]
    assert "reverse engineering" in texts["nda"].lower()
    assert "Material Transfer Agreement" in texts["mta"] and "1 year " in texts["mta"]
    assert "EGFR series C (sub_7Q2M)" in texts["mta"]
    assert "return or destroy" in texts["mta"]
    assert "48,200.50 CHF" in texts["service_agreement"]
    assert "LC-MS/MS method set-up 8,200.50" in texts["service_agreement"]
    assert "within 28 days" in texts["service_agreement"]
    assert "Intrinsic clearance in pooled human liver microsomes" in texts["experiment_specification"]
    assert "0.5 mg/mL protein" in texts["experiment_specification"]
    assert "Schedule A" not in texts["nda"]  # no molecules, no schedule


def test_a_blinded_sample_shows_its_label_formula_and_weight_only(renderer: JinjaTemplates) -> None:
    blinded = MoleculeRow(label="BLIND-9", formula="C12H15N3O", molecular_weight=217.27)
    pdf = renderer.render("mta", FIELDS["mta"], [blinded])
    text = text_of(pdf)
    assert "BLIND-9" in text and "C12H15N3O" in text and "217.27" in text
    assert "Blinded sample" in text
    assert depictions(pdf) == 0


def test_field_values_are_text_never_markup(renderer: JinjaTemplates) -> None:
    fields = {**FIELDS["nda"], "pharma_organization": "<b>Evil</b> & Co <img src='http://127.0.0.1:9/x.png'>"}
    text = text_of(renderer.render("nda", fields))
    assert "<b>Evil</b> & Co <img src='http://127.0.0.1:9/x.png'>" in text


def test_the_preview_uses_the_catalogue_samples(renderer: JinjaTemplates) -> None:
    pdf = renderer.preview("service_agreement")
    text = text_of(pdf)
    assert "Northwind Therapeutics Ltd." in text and "12,500.00 EUR" in text
    assert "NW-0003 (blinded)" in text
    assert depictions(pdf) == 2


def test_a_missing_required_field_and_an_unknown_field_are_named(renderer: JinjaTemplates) -> None:
    fields = {key: value for key, value in FIELDS["mta"].items() if key != "governing_law"}
    with pytest.raises(ValidationError) as raised:
        renderer.render("mta", {**fields, "discount": "10%"})
    assert raised.value.field_violations == [
        ("discount", "not a field of the mta template"),
        ("governing_law", "required"),
    ]


@pytest.mark.parametrize(
    ("name", "field", "value", "problem"),
    [
        ("nda", "effective_date", "02/03/2026", "a date as YYYY-MM-DD"),
        ("nda", "effective_date", "2026-02-30", "a date as YYYY-MM-DD"),
        ("nda", "term_years", "0", "a whole number from 1 to 50"),
        ("nda", "term_years", "51", "a whole number from 1 to 50"),
        ("nda", "pharma_organization", "Helix\nPharma", "a single line"),
        ("nda", "pharma_organization", "x" * 301, "at most 300 characters"),
        ("nda", "purpose", "evaluation\x00", "contains control characters"),
        ("service_agreement", "price", "48.200,50", "a decimal amount such as 12500.00"),
        ("service_agreement", "currency", "chf", "a three-letter ISO 4217 code such as EUR"),
        ("service_agreement", "line_items", "Set-up | 100\nAssay",
            "line 2: 'description | amount' with an amount such as 1500.00"),
    ],
)
def test_malformed_values_are_refused(
    renderer: JinjaTemplates, name: str, field: str, value: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        renderer.render(name, {**FIELDS[name], field: value})
    assert raised.value.field_violations == [(field, problem)]


def test_molecules_are_checked_and_bounded(renderer: JinjaTemplates) -> None:
    with pytest.raises(ValidationError) as raised:
        renderer.render("mta", FIELDS["mta"], [MoleculeRow(label="A", smiles="C1CC"), MoleculeRow(label=" ")])
    assert raised.value.field_violations == [
        ("molecules[0].smiles", "not a valid SMILES"),
        ("molecules[1].label", "required"),
    ]

    too_many = [MoleculeRow(label=f"M{i}", smiles="C") for i in range(MAX_MOLECULES + 1)]
    with pytest.raises(ValidationError) as raised:
        renderer.render("mta", FIELDS["mta"], too_many)
    assert raised.value.field_violations == [("molecules", f"at most {MAX_MOLECULES} molecules")]


def test_an_unknown_template_is_not_found(renderer: JinjaTemplates) -> None:
    with pytest.raises(NotFoundError):
        renderer.render("lease", {})
    with pytest.raises(NotFoundError):
        renderer.preview("../templates")
