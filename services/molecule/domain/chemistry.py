"""RDKit registration of one molecule: validate, standardize, identify, describe. No I/O.

This is the per-molecule work of CSV ingestion, so it is written for speed: every RDKit helper
object is created once per process (RDKit's own `Cleanup()` rebuilds its normalizer and reionizer
from their SMARTS on every call, which is half its cost), each conversion happens once, and the
log handling is a scope, not a global switch.

Standardization (the identity is the standard InChIKey of the result):
  parse + sanitize (RDKit's SMILES reader, which also removes explicit hydrogens)
  → the fragment parent (fragment_parent.py, after the ChEMBL structure pipeline): ionic bonds of
    alkali and alkaline-earth metals drawn as covalent ones become ions; solvents (ChEMBL's list)
    go; a metal complex or organometallic keeps its metal and every other fragment (cisplatin is
    "N.N.Cl[Pt]Cl", ferrocene keeps its iron); otherwise counter-ions (ChEMBL's list) go, unless
    nothing organic would be left (NaCl, lithium carbonate register as themselves); of several
    different remaining fragments the largest organic one is the parent
  → normalization, reionization, stereo reassignment — rdMolStandardize.CleanupInPlace's steps,
    with reused objects, but without its MetalDisconnector, which cuts every metal–ligand bond and
    so made cisplatin ammonia
  → Uncharger (neutralize what can be neutralized; canonical order, so the atom order of the input
    does not matter) → sanitize
  → optionally the canonical tautomer.
Metal–ligand bonds do not change the identity however they are drawn (covalent, dative, ionic):
standard InChI disconnects them (for dative bonds, which RDKit's InChI writer refuses, the key is
that of the structure without them). A change to these rules changes identities of stored
molecules: `python -m services.molecule.restandardize` reports the records it affects.

Decisions:
- num_atoms counts every atom including implicit hydrogens (DOMAIN.md allows 1–1000, twice the
  heavy-atom range); num_heavy_atoms counts atoms heavier than hydrogen.
- lipinski_violations counts MW > 500, logP > 5, H-bond donors > 5, acceptors > 10 using the same
  donor/acceptor values that are stored (RDKit's Lipinski-module definitions, CalcNumHBD/HBA).
- Calculated values are not range-checked: a valid structure is registered even if, say, its
  Crippen logP is 12; ranges apply to imported values (properties.parse_value).
- Floats are rounded to 4 decimals so stored values don't carry binary noise.
- Limits: MAX_SMILES_LENGTH characters, MAX_HEAVY_ATOMS heavy atoms in the input as written
  (bounds the work; also the DOMAIN.md num_heavy_atoms range), MAX_ATOMS atoms in the parent.

Fingerprint bytes (morgan_fp, pattern_fp; FINGERPRINT_BYTES = 256 each): bit i of the RDKit bit
vector (0 ≤ i < 2048) is bit (i % 8) — value 1 << (i % 8) — of byte i // 8. That is LSB-first
("little") bit order: numpy.packbits(bits, bitorder="little"), RDKit's FPS hex
(DataStructs.BitVectToFPSText) decoded, and int.from_bytes(fp, "little") has bit i set exactly
when RDKit's bit i is on. Read as 32 little-endian uint64 words, bit i is bit i % 64 of word i // 64,
which is what a popcount-based search index wants.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors
from rdkit.Chem.Draw import rdMolDraw2D
from rdkit.Chem.MolStandardize import rdMolStandardize

from services.molecule.domain.fragment_parent import break_ionic_metal_bonds, fragment_parent

MAX_SMILES_LENGTH = 2000
MAX_HEAVY_ATOMS = 500
MAX_ATOMS = 1000
MAX_QUERY_LENGTH = 1000
MAX_QUERY_ATOMS = 200
MIN_DEPICTION_PX = 50
MAX_DEPICTION_PX = 2000
MORGAN_RADIUS = 2
FINGERPRINT_BITS = 2048
FINGERPRINT_BYTES = FINGERPRINT_BITS // 8
FLOAT_DIGITS = 4


class InvalidStructure(ValueError):
    """Input that cannot be registered or used as a query; `reason` is shown to the user as is."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Registered:
    original_smiles: str  # the input without surrounding whitespace
    canonical_smiles: str  # of the standardized parent, isomeric
    inchi_key: str  # of the standardized parent: the identity within an organization
    formula: str
    molecular_weight: float
    calculated: dict[str, float | int]  # every DOMAIN.md calculated property, by name
    morgan_fp: bytes = field(repr=False)  # radius 2, 2048 bits, packed as in the module docstring
    pattern_fp: bytes = field(repr=False)  # Chem.PatternFingerprint, 2048 bits, same packing
    salt_stripped: bool  # fragments (counter-ions, solvents) were removed
    neutralized: bool  # formal charges were changed by the uncharger


class _Unsanitizable(Exception):
    """Standardization left a structure RDKit cannot sanitize."""


# Created once per process: building these parses their transform SMARTS.
_NORMALIZER = rdMolStandardize.Normalizer()
_REIONIZER = rdMolStandardize.Reionizer()
_UNCHARGER = rdMolStandardize.Uncharger(canonicalOrder=True)
_TAUTOMER_ENUMERATOR = rdMolStandardize.TautomerEnumerator()
_CHARGED_ATOM = Chem.MolFromSmarts("[!+0]")
_MORGAN = rdFingerprintGenerator.GetMorganGenerator(radius=MORGAN_RADIUS, fpSize=FINGERPRINT_BITS)

_ELEMENTS = frozenset(Chem.GetPeriodicTable().GetElementSymbol(z) for z in range(1, 119))
_AROMATIC_SYMBOLS = frozenset({"b", "c", "n", "o", "p", "s", "se", "as", "te", "si"})
_ORGANIC_SUBSET = ("Cl", "Br", "B", "C", "N", "O", "P", "S", "F", "I", "b", "c", "n", "o", "p", "s")
_NOT_SMILES_CHARACTER = re.compile(r"[^\x21-\x7e]")  # SMILES is printable ASCII without spaces
# RDKit's SMILES reader accepts "[#7]" (as a radical N), so that counts as SMARTS syntax too.
_SMARTS_ONLY = re.compile(r"[;,&!~]|\$\(|\[[^\]]*#")
_LOG_TIMESTAMP = re.compile(r"^\[\d\d:\d\d:\d\d\] ")
_PARSE_ERROR = re.compile(r"^(SMILES|SMARTS) Parse Error: (.*)$")


def register(smiles: str, *, tautomers: bool = False) -> Registered:
    """Validate and standardize one SMILES and compute everything stored for the molecule.

    Raises InvalidStructure with a human-readable reason (RDKit's message where it has one).
    """
    with rdBase.BlockLogs():  # RDKit would otherwise print every warning of a 500,000-row file
        text = _checked_text(smiles, MAX_SMILES_LENGTH, "SMILES")
        mol = _read_smiles(text)
        heavy_atoms = mol.GetNumHeavyAtoms()
        if heavy_atoms > MAX_HEAVY_ATOMS:
            raise InvalidStructure(f"too many atoms: {heavy_atoms} heavy atoms (limit {MAX_HEAVY_ATOMS})")
        try:
            try:
                mol, salt_stripped, neutralized = _standardize(mol, tautomers)
            except _Unsanitizable:
                # A normalization can leave an unkekulizable ring (mesoionic drugs such as
                # molsidomine): keep the structure as drawn rather than reject or corrupt it.
                mol, salt_stripped, neutralized = _standardize(_read_smiles(text), tautomers, normalize=False)
            return _describe(text, mol, salt_stripped, neutralized)
        except _Unsanitizable as error:
            raise InvalidStructure(f"standardization produced an invalid structure ({error})") from None
        except InvalidStructure:
            raise
        except Exception as error:  # RDKit raises assorted C++ exceptions for pathological input
            raise InvalidStructure(f"RDKit could not process the structure: {error}") from None


def register_many(
    smiles_list: Iterable[str], *, tautomers: bool = False
) -> list[Registered | InvalidStructure]:
    """register() over a chunk: one result per input, in order; invalid input is returned, never raised."""
    results: list[Registered | InvalidStructure] = []
    for smiles in smiles_list:
        try:
            results.append(register(smiles, tautomers=tautomers))
        except InvalidStructure as invalid:
            results.append(invalid)
        except Exception as error:  # a poison row must never take the chunk (or the worker) down
            results.append(InvalidStructure(f"could not process the structure: {error}"))
    return results


def pack_fingerprint(bits: DataStructs.ExplicitBitVect) -> bytes:
    """RDKit bit vector → bytes in this module's bit order (bit i in byte i // 8, value 1 << i % 8)."""
    return bytes.fromhex(DataStructs.BitVectToFPSText(bits))


def unpack_fingerprint(packed: bytes) -> DataStructs.ExplicitBitVect:
    """The inverse of pack_fingerprint, for RDKit's similarity functions."""
    return DataStructs.CreateFromFPSText(packed.hex())


def morgan_fingerprint(mol: Chem.Mol) -> bytes:
    return pack_fingerprint(_MORGAN.GetFingerprint(mol))


def pattern_fingerprint(mol: Chem.Mol) -> bytes:
    """Substructure-screen bits: a query's bits must all be set in any molecule it can match."""
    return pack_fingerprint(Chem.PatternFingerprint(mol, fpSize=FINGERPRINT_BITS))


def substructure_query(
    smarts_or_smiles: str, *, kind: Literal["auto", "smiles", "smarts"] = "auto"
) -> Chem.Mol:
    """A query molecule for HasSubstructMatch.

    "auto" reads text with SMARTS-only syntax (logic operators, "~", recursion, "[#7]") as SMARTS,
    then valid SMILES as SMILES (so a Kekulé benzene matches aromatic rings), and anything else as
    SMARTS. Callers that know which one the user meant should say so.
    """
    with rdBase.BlockLogs():
        text = _checked_text(smarts_or_smiles, MAX_QUERY_LENGTH, "query")
        query: Chem.Mol | None = None
        if kind == "smiles" or (kind == "auto" and not _SMARTS_ONLY.search(text)):
            try:
                query = _read_smiles(text)
            except InvalidStructure:
                if kind == "smiles":
                    raise
            else:
                # A fragment's open valences ("[N+](=O)[O-]") read as radicals, and a radical query atom
                # matches only radicals: a fragment means the group, whatever it is bonded to.
                for atom in query.GetAtoms():
                    atom.SetNumRadicalElectrons(0)
        if query is None:
            with rdBase.CaptureErrorLog() as log:
                query = Chem.MolFromSmarts(text)
            if query is None:
                raise InvalidStructure(f"invalid SMARTS: {_parse_error(text, log.messages, smiles=False)}")
            # SMARTS molecules come without valences and rings, which the pattern fingerprint reads.
            query.UpdatePropertyCache(strict=False)
            Chem.FastFindRings(query)
        atoms = query.GetNumAtoms()
        if atoms == 0:
            raise InvalidStructure("empty query")
        if atoms > MAX_QUERY_ATOMS:
            raise InvalidStructure(f"query too large: {atoms} atoms (limit {MAX_QUERY_ATOMS})")
        return query


def depict_svg(smiles: str, width: int = 300, height: int = 300) -> str:
    """An SVG picture of the structure as written (pass the canonical SMILES for the parent)."""
    mol = _depiction_molecule(smiles, width, height)
    drawer = rdMolDraw2D.MolDraw2DSVG(width, height)
    _draw(drawer, mol)
    return drawer.GetDrawingText()


def depict_png(smiles: str, width: int = 300, height: int = 300) -> bytes:
    mol = _depiction_molecule(smiles, width, height)
    drawer = rdMolDraw2D.MolDraw2DCairo(width, height)
    _draw(drawer, mol)
    return drawer.GetDrawingText()


def _standardize(mol: Chem.Mol, tautomers: bool, normalize: bool = True) -> tuple[Chem.Mol, bool, bool]:
    """Standardize (in place where RDKit can); return (parent, salt_stripped, neutralized)."""
    # Fragments first: the salt and solvent lists describe fragments as drawn (DMSO's S=O, not
    # the normalizer's [S+][O-]), and the normalizer and reionizer then see only the parent.
    parent = fragment_parent(break_ionic_metal_bonds(mol))
    mol = parent.mol  # the input itself when it is one fragment (the steps below work in place)
    salt_stripped = bool(parent.removed)
    # The rest of rdMolStandardize.CleanupInPlace (minus RemoveHs, which the SMILES reader did and
    # MetalDisconnector, which would cut every metal–ligand bond), with reused objects.
    if normalize:
        with rdBase.CaptureErrorLog() as log:
            _NORMALIZER.normalizeInPlace(mol)
        if log.messages:  # it logs, and carries on with a molecule it broke (e.g. unkekulizable)
            raise _Unsanitizable(f"normalization failed: {_log_lines(log.messages)[0]}")
    _REIONIZER.reionizeInPlace(mol)
    Chem.AssignStereochemistry(mol, cleanIt=True, force=True)
    neutralized = False
    charged = len(mol.GetSubstructMatches(_CHARGED_ATOM))  # in C++: a Python loop over atoms costs more
    if charged:
        _UNCHARGER.unchargeInPlace(mol)
        neutralized = len(mol.GetSubstructMatches(_CHARGED_ATOM)) != charged
    problem = Chem.SanitizeMol(mol, catchErrors=True)
    if problem != Chem.SanitizeFlags.SANITIZE_NONE:
        raise _Unsanitizable(str(problem))
    if tautomers:
        mol = _TAUTOMER_ENUMERATOR.Canonicalize(mol)
    return mol, salt_stripped, neutralized


def _describe(text: str, mol: Chem.Mol, salt_stripped: bool, neutralized: bool) -> Registered:
    heavy_atoms = mol.GetNumHeavyAtoms()
    if heavy_atoms == 0:
        raise InvalidStructure("no heavy atoms in the parent structure")
    atoms = mol.GetNumAtoms(onlyExplicit=False)
    if atoms > MAX_ATOMS:
        raise InvalidStructure(f"too many atoms: {atoms} including hydrogens (limit {MAX_ATOMS})")
    inchi_key = _inchi_key(mol)
    if not inchi_key:
        if any(atom.GetAtomicNum() == 0 for atom in mol.GetAtoms()):
            raise InvalidStructure("contains dummy atoms ('*'): a registered molecule must be complete")
        raise InvalidStructure("InChI could not be generated for this structure")
    # _CalcMolWt is what Descriptors.MolWt calls; importing Descriptors costs a second at start.
    molecular_weight = round(rdMolDescriptors._CalcMolWt(mol), FLOAT_DIGITS)
    logp = round(rdMolDescriptors.CalcCrippenDescriptors(mol)[0], FLOAT_DIGITS)
    donors = rdMolDescriptors.CalcNumHBD(mol)
    acceptors = rdMolDescriptors.CalcNumHBA(mol)
    calculated: dict[str, float | int] = {
        "molecular_weight": molecular_weight,
        "exact_mass": round(rdMolDescriptors.CalcExactMolWt(mol), FLOAT_DIGITS),
        "logp": logp,
        "tpsa": round(rdMolDescriptors.CalcTPSA(mol), FLOAT_DIGITS),
        "num_atoms": atoms,
        "num_heavy_atoms": heavy_atoms,
        "num_rings": rdMolDescriptors.CalcNumRings(mol),
        "num_rotatable_bonds": rdMolDescriptors.CalcNumRotatableBonds(mol),
        "num_h_donors": donors,
        "num_h_acceptors": acceptors,
        "lipinski_violations": (molecular_weight > 500) + (logp > 5) + (donors > 5) + (acceptors > 10),
    }
    return Registered(
        original_smiles=text,
        canonical_smiles=Chem.MolToSmiles(mol),
        inchi_key=inchi_key,
        formula=rdMolDescriptors.CalcMolFormula(mol),
        molecular_weight=molecular_weight,
        calculated=calculated,
        morgan_fp=morgan_fingerprint(mol),
        pattern_fp=pattern_fingerprint(mol),
        salt_stripped=salt_stripped,
        neutralized=neutralized,
    )


def _inchi_key(mol: Chem.Mol) -> str:
    """The standard InChIKey; for dative (coordination) bonds, which RDKit's InChI writer refuses,
    that of the structure without them — standard InChI disconnects metal–ligand bonds anyway, so
    "N->[Pt](<-N)(Cl)Cl" and "N.N.Cl[Pt]Cl" are one cisplatin."""
    inchi_key = Chem.MolToInchiKey(mol)
    dative = [bond for bond in mol.GetBonds() if bond.GetBondType() == Chem.BondType.DATIVE]
    if inchi_key or not dative:
        return inchi_key
    disconnected = Chem.RWMol(mol)
    for bond in dative:
        disconnected.RemoveBond(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx())
    Chem.SanitizeMol(disconnected)
    return Chem.MolToInchiKey(disconnected)


def _checked_text(value: object, limit: int, what: str) -> str:
    """Reject what RDKit would misread or should never see: SMILES is one token of printable ASCII.

    (RDKit stops at the first space and takes the rest as a name, so "C C" would silently be
    methane; CXSMILES extensions after a space are rejected for the same reason.)
    """
    if value is None:
        raise InvalidStructure(f"empty {what}")
    if not isinstance(value, str):
        raise InvalidStructure(f"{what} must be text, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InvalidStructure(f"empty {what}")
    if len(text) > limit:
        raise InvalidStructure(f"{what} too long: {len(text)} characters (limit {limit})")
    bad = _NOT_SMILES_CHARACTER.search(text)
    if bad is not None:
        position = bad.start() + 1
        if bad.group().isspace():
            raise InvalidStructure(
                f"whitespace inside the {what} at position {position} (names and CXSMILES"
                " extensions are not accepted)"
            )
        raise InvalidStructure(
            f"not a {what}: character {bad.group()!r} at position {position} (binary data or non-ASCII text)"
        )
    return text


def _read_smiles(text: str) -> Chem.Mol:
    """Parse and sanitize; on failure, say why in words (RDKit's parse error or sanitization problem)."""
    with rdBase.CaptureErrorLog() as log:
        mol = Chem.MolFromSmiles(text)
    if mol is not None:
        return mol
    if "Parse Error" in log.messages:
        raise InvalidStructure(f"invalid SMILES: {_parse_error(text, log.messages)}")
    unsanitized = Chem.MolFromSmiles(text, sanitize=False)
    problems = Chem.DetectChemistryProblems(unsanitized) if unsanitized is not None else ()
    if not problems:
        last = (_log_lines(log.messages) or ["rejected by RDKit"])[-1]
        raise InvalidStructure(f"invalid structure: {last}")
    reason = _problem_reason(problems[0].GetType(), problems[0].Message())
    if len(problems) > 1:
        reason += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    raise InvalidStructure(reason)


def _problem_reason(kind: str, message: str) -> str:
    """RDKit's sanitization message, lower-cased to read as a reason ("explicit valence for atom # 3 N…")."""
    if "Kekulize" in kind:
        detail = message.removeprefix("Can't kekulize mol.").strip()
        return f"can't kekulize (aromaticity failure): {detail[:1].lower()}{detail[1:]}"
    return f"{message[:1].lower()}{message[1:]}"


def _parse_error(text: str, messages: str, smiles: bool = True) -> str:
    """The first parse error of RDKit's log, with the position it points at; or an unknown element."""
    unknown = _unknown_element(text) if smiles else None  # SMARTS letters are not all elements
    if unknown:
        return unknown
    errors = [m.group(2) for line in _log_lines(messages) if (m := _PARSE_ERROR.match(line))]
    if not errors:
        return "not readable"
    first = re.sub(r" (for input|while parsing):.*$", "", errors[0])
    positions = (re.search(r"around position (\d+)", error) for error in errors)
    position = next((p.group(1) for p in positions if p), None)
    return f"{first} at position {position}" if position else first


def _log_lines(messages: str) -> list[str]:
    return [_LOG_TIMESTAMP.sub("", line).strip() for line in messages.splitlines() if line.strip()]


def _unknown_element(text: str) -> str | None:
    """Name an unknown or unbracketed element, which RDKit reports only as a syntax error."""
    i = 0
    while i < len(text):
        char = text[i]
        if char == "[":
            end = text.find("]", i)
            if end < 0:
                return None
            symbol = re.match(r"\d*([A-Za-z][a-z]?)", text[i + 1 : end])
            if symbol and not _is_element(symbol.group(1)) and not _is_element(symbol.group(1)[0]):
                return f"unknown element {symbol.group(1)!r} at position {i + 2 + symbol.start(1)}"
            i = end + 1
        elif char.isalpha():
            organic = next((s for s in _ORGANIC_SUBSET if text.startswith(s, i)), None)
            pair = text[i : i + 2]
            # "Na" is sodium written without brackets; "Sc" in "Sc1ccccc1" is S then aromatic c.
            if len(pair) == 2 and pair in _ELEMENTS and pair[1] not in "bcnops" and organic != pair:
                return f"element {pair!r} at position {i + 1} must be written in brackets: [{pair}]"
            if organic is None:
                if char in _ELEMENTS:
                    return f"element {char!r} at position {i + 1} must be written in brackets: [{char}]"
                return f"unknown element {char!r} at position {i + 1}"
            i += len(organic)
        else:
            i += 1
    return None


def _is_element(symbol: str) -> bool:
    return symbol in _ELEMENTS or symbol in _AROMATIC_SYMBOLS


def _depiction_molecule(smiles: str, width: int, height: int) -> Chem.Mol:
    for name, size in (("width", width), ("height", height)):
        if not MIN_DEPICTION_PX <= size <= MAX_DEPICTION_PX:
            raise ValueError(f"{name} must be {MIN_DEPICTION_PX}–{MAX_DEPICTION_PX} px, got {size}")
    with rdBase.BlockLogs():
        mol = _read_smiles(_checked_text(smiles, MAX_SMILES_LENGTH, "SMILES"))
    if mol.GetNumHeavyAtoms() > MAX_HEAVY_ATOMS:
        raise InvalidStructure(f"too many atoms to draw: {mol.GetNumHeavyAtoms()} (limit {MAX_HEAVY_ATOMS})")
    return mol


def _draw(drawer: rdMolDraw2D.MolDraw2D, mol: Chem.Mol) -> None:
    with rdBase.BlockLogs():
        rdMolDraw2D.PrepareAndDrawMolecule(drawer, mol)
    drawer.FinishDrawing()
