"""Generated documents: Jinja2 templates (services/document/templates, listed in templates.toml) rendered
to PDF/A-3b by WeasyPrint, with the molecules as a table of RDKit depictions.

Rendering is CPU work and synchronous; the use case runs it in a thread."""

from __future__ import annotations

import base64
import math
import re
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from rdkit import Chem, rdBase
from rdkit.Chem import rdMolDescriptors
from rdkit.Chem.Draw import rdMolDraw2D
from weasyprint import HTML
from weasyprint.urls import URLFetcher

from services.document.domain.vocabulary import DocumentType
from services.document.service.ports import MoleculeRow, TemplateFieldInfo, TemplateInfo
from services.runtime.errors import NotFoundError, ValidationError
from services.runtime.validation import Violations

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
CATALOGUE_FILE = "templates.toml"

MAX_MOLECULES = 500
MAX_REPORTED_UNKNOWN = 20  # one error names at most this many unknown fields
MAX_LINE_ITEMS = 100
MAX_FIELD_LENGTH = {"line": 300, "text": 5000, "line_items": 10000}  # other kinds have their own shape
MAX_LABEL_LENGTH = 200
MAX_SHORT_TEXT_LENGTH = 200  # a molecule's formula and amount
MAX_NOTES_LENGTH = 1000
MAX_SMILES_LENGTH = 2000
MAX_DRAWN_ATOMS = 250  # larger structures are listed without a drawing
DEPICTION_SIZE = (240, 180)  # px; the CSS scales it to the table cell

# WeasyPrint (over Pango and fontconfig) is not documented as thread-safe, and the use cases render in
# worker threads: one rendering at a time per process.
_RENDERING = threading.Lock()
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGER = re.compile(r"[0-9]{1,6}")
_MONEY = re.compile(r"[0-9]{1,12}(\.[0-9]{1,2})?")
_CURRENCY = re.compile(r"[A-Z]{3}")
_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # not strftime's %B, which follows the process locale
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # tab and newline are text


@dataclass(frozen=True)
class _Field:
    info: TemplateFieldInfo
    kind: str
    maximum: int  # for integers
    sample: str


@dataclass(frozen=True)
class _Template:
    info: TemplateInfo
    file: str
    fields: Mapping[str, _Field]


@dataclass(frozen=True)
class _MoleculeCell:
    """A molecule row as the template prints it."""

    label: str
    formula: str
    molecular_weight: str
    amount: str
    notes: str
    blinded: bool
    depiction: str  # a data: URL of the SVG drawing, empty when not drawn


@dataclass(frozen=True)
class _LineItem:
    description: str
    amount: str


def jinja_environment(directory: Path) -> Environment:
    """Autoescaped, and an undefined name is an error rather than an empty string in a contract."""
    environment = Environment(
        loader=FileSystemLoader(directory), autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True
    )
    environment.filters["long_date"] = _long_date
    environment.filters["money"] = _money
    return environment


def pdf_a(html: str) -> bytes:
    """HTML → PDF/A-3b. Fonts come from the system and are embedded; only data: URLs are fetched, so a
    template or a field can never make the renderer reach the network or the file system."""
    fetcher = URLFetcher(allowed_protocols={"data"}, fail_on_errors=False)
    with _RENDERING:
        return bytes(HTML(string=html, url_fetcher=fetcher).write_pdf(pdf_variant="pdf/a-3b"))


class JinjaTemplates:
    """The TemplateRenderer port over the template files of `directory`."""

    def __init__(self, directory: Path = TEMPLATES_DIR) -> None:
        catalogue = tomllib.loads((directory / CATALOGUE_FILE).read_text(encoding="utf-8"))
        self._templates = _read_catalogue(catalogue)
        self._preview_molecules = tuple(MoleculeRow(**row) for row in catalogue.get("preview_molecules", ()))
        self._environment = jinja_environment(directory)
        for template in self._templates.values():
            self._environment.get_template(template.file)  # a broken template fails at start, not per request

    def templates(self) -> Sequence[TemplateInfo]:
        return tuple(template.info for template in self._templates.values())

    def render(self, name: str, fields: Mapping[str, str], molecules: Sequence[MoleculeRow] = ()) -> bytes:
        template = self._template(name)
        violations = Violations()
        values = _checked_fields(template, fields, violations)
        _check_molecules(molecules, violations)
        if violations:
            first_field, problem = violations.items[0]
            raise ValidationError(f"Invalid {first_field}: {problem}", field_violations=violations.items)
        html = self._environment.get_template(template.file).render(
            title=template.info.title,
            f=values,
            molecules=[_cell(molecule) for molecule in molecules],
            line_items=_line_items(values.get("line_items", "")),
        )
        return pdf_a(html)

    def preview(self, name: str) -> bytes:
        template = self._template(name)
        samples = {field.info.name: field.sample for field in template.fields.values()}
        return self.render(name, samples, self._preview_molecules)

    def _template(self, name: str) -> _Template:
        template = self._templates.get(name)
        if template is None:
            raise NotFoundError("Template not found", metadata={"template": name[:100]})
        return template


# -- the catalogue -----------------------------------------------------------------------------------
def _read_catalogue(catalogue: Mapping[str, Any]) -> dict[str, _Template]:
    specs = catalogue["fields"]
    templates = {}
    for name, entry in catalogue["templates"].items():
        fields = {}
        for required, field_names in ((True, entry["required"]), (False, entry.get("optional", []))):
            for field_name in field_names:
                spec = specs[field_name]  # a KeyError here is a typo in templates.toml
                if spec["kind"] not in _CHECKS:
                    raise ValueError(f"{CATALOGUE_FILE}: unknown kind {spec['kind']!r} of field {field_name!r}")
                fields[field_name] = _Field(
                    info=TemplateFieldInfo(name=field_name, description=spec["description"], required=required),
                    kind=spec["kind"],
                    maximum=int(spec.get("max", 3650)),
                    sample=spec["sample"],
                )
        info = TemplateInfo(
            name=name,
            title=entry["title"],
            document_type=DocumentType(entry["document_type"]),
            fields=tuple(field.info for field in fields.values()),
        )
        templates[name] = _Template(info=info, file=entry["file"], fields=fields)
    return templates


# -- checking the fields -----------------------------------------------------------------------------
def _checked_fields(template: _Template, given: Mapping[str, str], violations: Violations) -> dict[str, str]:
    """Every field of the template, stripped and checked; an absent optional field is ""."""
    unknown = sorted(set(given) - set(template.fields))
    for name in unknown[:MAX_REPORTED_UNKNOWN]:
        violations.add(name[:100], f"not a field of the {template.info.name} template")
    values = {}
    for name, spec in template.fields.items():
        value = str(given.get(name, "")).strip()
        if not value:
            if spec.info.required:
                violations.add(name, "required")
        elif problem := _problem(spec, value):
            violations.add(name, problem)
        values[name] = value
    return values


def _problem(spec: _Field, value: str) -> str:
    limit = MAX_FIELD_LENGTH.get(spec.kind, 100)
    if len(value) > limit:
        return f"at most {limit} characters"
    if _CONTROL.search(value):
        return "contains control characters"
    return _CHECKS[spec.kind](value, spec.maximum)


def _check_line(value: str, _maximum: int) -> str:
    return "a single line" if "\n" in value or "\r" in value else ""


def _check_text(_value: str, _maximum: int) -> str:
    return ""


def _check_date(value: str, _maximum: int) -> str:
    if _DATE.fullmatch(value):
        try:
            date.fromisoformat(value)
            return ""
        except ValueError:
            pass
    return "a date as YYYY-MM-DD"


def _check_integer(value: str, maximum: int) -> str:
    if _INTEGER.fullmatch(value) and 1 <= int(value) <= maximum:
        return ""
    return f"a whole number from 1 to {maximum}"


def _check_money(value: str, _maximum: int) -> str:
    return "" if _MONEY.fullmatch(value) else "a decimal amount such as 12500.00"


def _check_currency(value: str, _maximum: int) -> str:
    return "" if _CURRENCY.fullmatch(value) else "a three-letter ISO 4217 code such as EUR"


def _check_line_items(value: str, _maximum: int) -> str:
    lines = [line for line in value.splitlines() if line.strip()]
    if len(lines) > MAX_LINE_ITEMS:
        return f"at most {MAX_LINE_ITEMS} lines"
    for number, line in enumerate(lines, start=1):
        description, _, amount = line.rpartition("|")
        if not description.strip() or not _MONEY.fullmatch(amount.strip()):
            return f"line {number}: 'description | amount' with an amount such as 1500.00"
    return ""


_CHECKS = {
    "line": _check_line,
    "text": _check_text,
    "date": _check_date,
    "integer": _check_integer,
    "money": _check_money,
    "currency": _check_currency,
    "line_items": _check_line_items,
}


def _line_items(value: str) -> list[_LineItem]:
    items = []
    for line in value.splitlines():
        if line.strip():
            description, _, amount = line.rpartition("|")
            items.append(_LineItem(description=description.strip(), amount=_money(amount.strip())))
    return items


def _check_molecules(molecules: Sequence[MoleculeRow], violations: Violations) -> None:
    if len(molecules) > MAX_MOLECULES:
        violations.add("molecules", f"at most {MAX_MOLECULES} molecules")
        return
    for index, molecule in enumerate(molecules):
        where = f"molecules[{index}]"
        for name, value, limit in (
            ("label", molecule.label, MAX_LABEL_LENGTH),
            ("smiles", molecule.smiles, MAX_SMILES_LENGTH),
            ("formula", molecule.formula, MAX_SHORT_TEXT_LENGTH),
            ("amount", molecule.amount, MAX_SHORT_TEXT_LENGTH),
            ("notes", molecule.notes, MAX_NOTES_LENGTH),
        ):
            if len(value) > limit:
                violations.add(f"{where}.{name}", f"at most {limit} characters")
            elif _CONTROL.search(value):
                violations.add(f"{where}.{name}", "contains control characters")
        if not molecule.label.strip():
            violations.add(f"{where}.label", "required")
        if not (math.isfinite(molecule.molecular_weight) and molecule.molecular_weight >= 0):
            violations.add(f"{where}.molecular_weight", "a positive number")
        if molecule.smiles.strip() and len(molecule.smiles) <= MAX_SMILES_LENGTH and _molecule(molecule.smiles) is None:
            violations.add(f"{where}.smiles", "not a valid SMILES")


# -- the molecule table ------------------------------------------------------------------------------
def _molecule(smiles: str) -> Chem.Mol | None:
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(smiles.strip())


def _cell(molecule: MoleculeRow) -> _MoleculeCell:
    """A blinded sample (no SMILES) shows what it was given: label, formula and weight, never a structure.
    A drawn one gets its formula and weight from the structure when they were not given."""
    formula, weight, depiction = molecule.formula, molecule.molecular_weight, ""
    mol = _molecule(molecule.smiles) if molecule.smiles.strip() else None
    if mol is not None:
        formula = formula or rdMolDescriptors.CalcMolFormula(mol)
        weight = weight or rdMolDescriptors._CalcMolWt(mol)  # what Descriptors.MolWt calls, without its import cost
        if mol.GetNumHeavyAtoms() <= MAX_DRAWN_ATOMS:
            depiction = _depiction(mol)
    return _MoleculeCell(
        label=molecule.label.strip(),
        formula=formula,
        molecular_weight=f"{weight:.2f}" if weight else "",
        amount=molecule.amount,
        notes=molecule.notes,
        blinded=mol is None,
        depiction=depiction,
    )


def _depiction(mol: Chem.Mol) -> str:
    """The SVG as a base64 data: URL: it reaches WeasyPrint as an image, never as markup of the page."""
    drawer = rdMolDraw2D.MolDraw2DSVG(*DEPICTION_SIZE)
    with rdBase.BlockLogs():
        rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
    return "data:image/svg+xml;base64," + base64.b64encode(drawer.GetDrawingText().encode("utf-8")).decode("ascii")


# -- filters -------------------------------------------------------------------------------------------
def _long_date(value: str) -> str:
    """2026-01-15 → 15 January 2026 (unambiguous in every jurisdiction); "" stays ""."""
    if not value:
        return ""
    day = date.fromisoformat(value)
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"


def _money(value: str) -> str:
    """12500 → 12,500.00"""
    return f"{Decimal(value):,.2f}" if value else ""
