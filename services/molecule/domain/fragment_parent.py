"""Which part of a submitted structure is the registered parent: metals, salts, solvents. No I/O.

The rules follow the ChEMBL structure pipeline (chembl_structure_pipeline 1.2.4, standardizer.py
get_fragment_parent_mol, exclude_flag.py and data/{salts,solvents}.smi; Copyright (c) 2019 Greg
Landrum and the ChEMBL group, MIT licence — the lists below are copied from it unchanged). The
package itself is not a dependency: its get_fragment_parent_mol re-reads and re-parses both lists
(~170 SMARTS) on every call, which would dominate CSV ingestion, and its standardizer is a
different pipeline from ours; the lists are parsed here once per process and bucketed by size.

Rules, in order (see fragment_parent()):
1. Ionic bonds drawn as covalent ones are broken into ions: an alkali metal (Li…Fr) bonded to
   N, O, S or a halogen ("[Na]OC(=O)R", "[Na]Cl"); an alkaline-earth metal (Be…Ra) whose bonds all
   go to O, S or halogens ("O=C(R)O[Mg]OC(=O)R"). Bonds of these metals to carbon (organolithiums,
   Grignards) or to N of an alkaline-earth metal (chlorophyll's Mg) are kept, and so are every
   other metal's bonds: a drawn metal–ligand bond is chemistry, not a salt.
2. Solvent fragments (SOLVENTS: water, DMSO, ethanol, …) are removed, unless nothing else is left.
3. Metal complexes and organometallics keep their metal: if a remaining fragment contains a
   structural metal (ChEMBL's METAL_LIST: transition metals, lanthanides, actinides, Sn, Pb, Hg,
   Sb, …) or any metal bonded to another atom, every remaining fragment is kept — cisplatin is
   "N.N.Cl[Pt]Cl", never ammonia; ferrocene keeps its iron. (ChEMBL keeps the whole structure of
   such compounds for the same reason: its counter-ion list contains ligands such as ammonia.)
4. Otherwise counter-ions (SALTS: halides, sulfate, mesylate, tromethamine, Na, K, Mg, Ca, Zn,
   Al, Ag, …) are removed when an organic fragment is left (one with a carbon bonded to hydrogen,
   to carbon, or to nitrogen other than by a triple bond: urea and guanidine are organic,
   carbonate and cyanide are not). If every fragment is a listed counter-ion, the organic ones are
   the parent: sodium acetate is acetic acid, magnesium stearate stearic acid, tris hydrochloride
   tris. With nothing organic to keep, the structure is registered as itself (NaCl, KCl, lithium
   carbonate, KCN, hydrazine borate): it is a real substance, and refusing it would only make
   users draw it differently.
5. Identical fragments are one (a hemisulfate's two drug molecules); of several different ones
   the largest organic fragment is the parent (RDKit's LargestFragmentChooser, as before).

Consequences worth knowing: a metal from the counter-ion list drawn as a free ion is a counter-ion
("[Zn+2]" with two pyrithione anions registers as pyrithione; draw the Zn–O/S bonds to register the
complex), and a complex keeps its counter-ions (gadoterate meglumine is not gadoterate).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from rdkit import Chem
from rdkit.Chem.MolStandardize import rdMolStandardize

# chembl_structure_pipeline data/solvents.smi (name, SMARTS), unchanged.
SOLVENTS = (
    ("WATER", "[OH2]"),
    ("DICHLOROMETHANE", "ClCCl"),
    ("TRICHLOROMETHANE", "ClC(Cl)Cl"),
    ("ETHYL ACETATE", "CCOC(=O)C"),
    ("METHANOL", "CO"),
    ("PROPAN-2-OL", "CC(C)O"),
    ("ACETONE", "CC(=O)C"),
    ("DMSO", "CS(=O)C"),
    ("ETHANOL", "CCO"),
)

# chembl_structure_pipeline data/salts.smi (name, SMARTS), unchanged.
SALTS = (
    ("Tetrafluoroboranuide", "F[B-](F)(F)F"),
    ("Arginine", "NC(CCCNC(=N)N)C(=O)O"),
    ("Deanol", "CN(C)CCO"),
    ("2-(Diethylamino)ethanol", "CCN(CC)CCO"),
    ("Ethanolamine", "NCCO"),
    ("DiMeglumine", "CNCC(O)C(O)C(O)C(O)CO"),
    ("Acetate", "CC(=O)O"),
    ("Aceturate", "CC(=O)NCC(=O)O"),
    ("Stearate", "CCCCCCCCCCCCCCCCCC(=O)O"),
    ("Adipate", "OC(=O)CCCCC(=O)O"),
    ("Aluminium", "[Al]"),
    ("Ammonium", "N"),
    ("Ascorbate", "OCC(O)C1OC(=O)C(=C1O)O"),
    ("Aspartate", "NC(CC(=O)O)C(=O)O"),
    ("Barium", "[Ba]"),
    ("Benethamine", "C(Cc1ccccc1)NCc2ccccc2"),
    ("Benzathine", "C(CNCc1ccccc1)NCc2ccccc2"),
    ("Benzoate", "OC(=O)c1ccccc1"),
    ("Besylate", "OS(=O)(=O)c1ccccc1"),
    ("Bismuth", "[Bi]"),
    ("Bromide", "Br"),
    ("Butyraldehyde", "CCCC=O"),
    ("Ethyl Butanoate", "CCCC(=O)OCC"),
    ("Calcium", "[Ca]"),
    ("Camsylate", "CC1(C)C2CCC1(CS(=O)(=O)O)C(=O)C2"),
    ("Carbonate", "OC(=O)O"),
    ("Chloride", "Cl"),
    ("Choline", "C[N+](C)(C)CCO"),
    ("Citrate", "OC(=O)CC(O)(CC(=O)O)C(=O)O"),
    ("Closylate", "OS(=O)(=O)c1ccc(Cl)cc1"),
    ("Cyclamate", "OS(=O)(=O)NC1CCCCC1"),
    ("Dichloroacetate", "OC(=O)C(Cl)Cl"),
    ("Diethylamine", "CCNCC"),
    ("Dimethylethanolamine", "CC(C)(N)CO"),
    ("Diolamine", "OCCNCCO"),
    ("Edamine", "NCCN"),
    ("Edisylate", "OS(=O)(=O)CCS(=O)(=O)O"),
    ("Epolamine", "OCCN1CCCC1"),
    ("Erbumine", "CC(C)(C)N"),
    ("Estolate", "CCCCCCCCCCCCOS(=O)(=O)O"),
    ("Esylate", "CCS(=O)(=O)O"),
    ("Ethylsulfate", "CCOS(=O)(=O)O"),
    ("Fluoride", "F"),
    ("Formate", "OC=O"),
    ("Gluceptate", "OCC(O)C(O)C(O)C(O)C(O)C(=O)O"),
    ("Gluconate", "OCC(O)C(O)C(O)C(O)C(=O)O"),
    ("Glucuronate", "OC1OC(C(O)C(O)C1O)C(=O)O"),
    ("Glutamate", "NC(CCC(=O)O)C(=O)O"),
    ("Glycerate", "OCC(O)CO"),
    ("Glycerophosphate", "OCC(O)COP(=O)(O)O"),
    ("Hexafluorophosphate", "F[P](F)(F)(F)(F)F"),
    ("Hypophosphite", "OP=O"),
    ("Iodide", "I"),
    ("Isethionate", "OCCS(=O)(=O)O"),
    ("Potassium", "[K]"),
    ("Lactate", "CC(O)C(=O)O"),
    ("Lactobionate", "OCC(O)C(OC1OC(CO)C(O)C(O)C1O)C(O)C(O)C(=O)O"),
    ("Lithium", "[Li]"),
    ("Lysine", "NCCCCC(N)C(=O)O"),
    ("Malate", "OC(CC(=O)O)C(=O)O"),
    ("Maleate and Fumarate", "OC(=O)C=CC(=O)O"),
    ("Mesylate", "CS(=O)(=O)O"),
    ("Metaphosphate", "OP(=O)=O"),
    ("Methosulfate", "COS(=O)(=O)O"),
    ("Magnesium", "[Mg]"),
    ("Monofluorophosphate", "OP(=O)(O)F"),
    ("Sodium", "[Na]"),
    ("Napadisilate", "OS(=O)(=O)c1cccc2c(cccc12)S(=O)(=O)O"),
    ("Napsylate", "OS(=O)(=O)c1ccc2ccccc2c1"),
    ("Nitrate", "O[N](=O)O"),
    ("Oxalate", "OC(=O)C(=O)O"),
    ("Palmitate", "CCCCCCCCCCCCCCCC(=O)O"),
    ("Pamoate", "OC(=O)c1cc2ccccc2c(Cc3c(O)c(cc4ccccc34)C(=O)O)c1O"),
    ("Perchlorate", "OCl(=O)(=O)=O"),
    ("Phosphanilate", "Nc1ccc(cc1)P(=O)(O)O"),
    ("Phosphate", "OP(=O)(O)O"),
    ("Picrate", "Oc1c(cc(cc1[N+](=O)[O-])[N+](=O)[O-])[N+](=O)[O-]"),
    ("Piperazine", "C1CNCCN1"),
    ("Propylene Glycol", "CC(O)CO"),
    ("Saccharin", "O=C1NS(=O)(=O)c2ccccc12"),
    ("Salicylate", "OC(=O)c1ccccc1O"),
    ("Silver", "[Ag]"),
    ("Strontium", "[Sr]"),
    ("Succinate", "OC(=O)CCC(=O)O"),
    ("Sulfate", "OS(=O)(=O)O"),
    ("Sulfosalicylate", "OC(=O)c1cccc(c1O)S(=O)(=O)O"),
    ("Sulphide", "[S-2]"),
    ("Terephthalate", "OC(=O)c1ccc(cc1)C(=O)O"),
    ("Tosylate", "Cc1ccc(cc1)S(=O)(=O)O"),
    ("Triclofenate", "Oc1cc(Cl)c(Cl)cc1Cl"),
    ("Triethylamine", "CCN(CC)CC"),
    ("Trifenatate", "OC(=O)C(c1ccccc1)(c2ccccc2)c3ccccc3"),
    ("Triflutate", "OC(=O)C(F)(F)F"),
    ("Tromethamine", "NC(CO)(CO)CO"),
    ("Buciclate", "CCCCC1CCC(CC1)C(=O)O"),
    ("Butyrate", "CCCC(=O)O"),
    ("Caproate", "CCCCCC(=O)O"),
    ("Cyclotate", "CC12CCC(CC1)(C=C2)C(=O)O"),
    ("Cypionate", "OC(=O)CCC1CCCC1"),
    ("Daproate", "CN(C)CCC(=O)O"),
    ("EDTA", "OC(=O)CN(CCN(CC(=O)O)CC(=O)O)CC(=O)O"),
    ("Elaidate and oleate", "CCCCCCCCC=CCCCCCCCC(=O)O"),
    ("Enanthate", "CCCCCCC(=O)O"),
    ("Etabonate", "CCOC(=O)O"),
    ("Ethanediol", "COCCO"),
    ("Etiprate", "OC(=O)CNC(=O)c1ccccc1"),
    ("Etzadroxil", "CCC(CC)C(=O)OCO"),
    ("Fostedate", "CCCCCCCCCCCCCCOP(=O)(O)O"),
    ("Furoate", "OC(=O)c1occc1"),
    ("Hybenzate", "OC(=O)c1ccccc1C(=O)c2ccc(O)cc2"),
    ("Laurate", "CCCCCCCCCCCC(=O)O"),
    ("Mebutate", "CC=C(C)C(=O)O"),
    ("Mepesuccinate", "COC(=O)CC(O)(CCCC(C)(C)O)C(=O)O"),
    ("Metazoate", "OC(=O)c1cccc(c1)S(=O)(=O)O"),
    ("Methionil", "CSCCC(N)C(=O)C"),
    ("Nicotinate", "OC(=O)c1cccnc1"),
    ("Peroxide", "OO"),
    ("Phenpropionate", "OC(=O)CCc1ccccc1"),
    ("Phenylacetate", "OC(=O)Cc1ccccc1"),
    ("Pivalate", "CC(C)(C)C(=O)O"),
    ("Propionate", "CCC(=O)O"),
    ("Tebutate", "CC(C)(C)CC(=O)O"),
    ("Trolamine", "OCCN(CCO)CCO"),
    ("Undecylate", "CCCCCCCCCCC(=O)O"),
    ("Undecylenate", "OC(=O)CCCCCCCCC=C"),
    ("Valerate", "CCCCC(=O)O"),
    ("Water", "O"),
    ("Xinafoate", "OC(=O)c1ccc2ccccc2c1O"),
    ("Zinc", "[Zn]"),
    ("Imidazole", "c1c[nH]cn1"),
    ("4-(2-Hydroxyethyl)morpholine", "OCCN1CCOCC1"),
    ("4-Acetamidobenzoic acid", "CC(=O)Nc1ccc(cc1)C(=O)O"),
    ("Camphoric acid", "CC1(C)C(CCC1(C)C(=O)O)C(=O)O"),
    ("Capric acid", "CCCCCCCCCC(=O)O"),
    ("Caprylic acid", "CCCCCCCC(=O)O"),
    ("Cinnamic acid", "OC(=O)C=Cc1ccccc1"),
    ("Mucic acid", "OC(C(O)C(O)C(=O)O)C(O)C(=O)O"),
    ("Gentisic acid", "OC(=O)c1cc(O)ccc1O"),
    ("Glutaric acid", "OC(=O)CCCC(=O)O"),
    ("2-Oxoglutaric acid", "OC(=O)CCC(=O)C(=O)O"),
    ("Glycolic acid", "OCC(=O)O"),
    ("Isobutyric acid", "CC(C)C(=O)O"),
    ("Mandelic acid", "OC(C(=O)O)c1ccccc1"),
    ("Orotic acid", "OC(=O)c1cc(=O)nc(=O)n1"),
    ("Pyroglutamic acid", "OC(=O)C1CCC(=O)N1"),
    ("Tartrate", "OC(C(O)C(=O)O)C(=O)O"),
    ("Thiocyanic acid", "SC#N"),
    ("Methyl Iodide", "CI"),
    ("Sulfurous Acid", "OS(=O)O"),
    ("Dicyclohexylamine", "C1CCC(CC1)NC2CCCCC2"),
    ("Triflate", "OS(=O)(=O)C(F)(F)F"),
    ("Mesitylene sulfonate", "Cc1cc(C)c(c(C)c1)S(=O)(=O)O"),
    ("Malonic acid", "OC(=O)CC(=O)O"),
    ("Fluorosulfuric acid", "OS(=O)(=O)F"),
    ("Acetylsulfate", "CC(=O)OS(=O)(=O)O"),
    ("Proton", "[H]"),
    ("Rubidium", "[Rb]"),
    ("Cesium", "[Cs]"),
    ("Francium", "[Fr]"),
    ("Beryllium", "[Be]"),
    ("Radium", "[Ra]"),
    ("Glucuronate open form", "C(=O)C(O)C(O)C(O)C(O)C(=O)O"),
    ("Dimepranol", "CC(O)CN(C)C"),
)

# chembl_structure_pipeline exclude_flag.METAL_LIST: metals whose compounds ChEMBL keeps whole.
STRUCTURAL_METALS = frozenset(
    [
        "Sc",
        "Ti",
        "V",
        "Cr",
        "Mn",
        "Fe",
        "Co",
        "Ni",
        "Cu",
        "Ga",
        "Y",
        "Zr",
        "Nb",
        "Mo",
        "Tc",
        "Ru",
        "Rh",
        "Pd",
        "Cd",
        "In",
        "Sn",
        "La",
        "Hf",
        "Ta",
        "W",
        "Re",
        "Os",
        "Ir",
        "Pt",
        "Au",
        "Hg",
        "Tl",
        "Pb",
        "Bi",
        "Po",
        "Ac",
        "Ce",
        "Pr",
        "Nd",
        "Pm",
        "Sm",
        "Eu",
        "Gd",
        "Tb",
        "Dy",
        "Ho",
        "Er",
        "Tm",
        "Yb",
        "Lu",
        "Th",
        "Pa",
        "U",
        "Np",
        "Pu",
        "Am",
        "Cm",
        "Bk",
        "Cf",
        "Es",
        "Fm",
        "Md",
        "No",
        "Lr",
        "Ge",
        "Sb",
    ]
)
ALKALI_METALS = frozenset({3, 11, 19, 37, 55, 87})
ALKALINE_EARTH_METALS = frozenset({4, 12, 20, 38, 56, 88})
# Every metal: the structural ones, groups 1 and 2, and the counter-ion metals of SALTS (Al, Zn, Ag).
_METALS = frozenset(
    {Chem.GetPeriodicTable().GetAtomicNumber(symbol) for symbol in (*STRUCTURAL_METALS, "Al", "Zn", "Ag")}
    | ALKALI_METALS
    | ALKALINE_EARTH_METALS
)
_IONIC_PARTNERS = frozenset({7, 8, 9, 16, 17, 35, 53})  # of an alkali metal: N, O, F, S, Cl, Br, I
_ALKALINE_EARTH_PARTNERS = frozenset({8, 9, 16, 17, 35, 53})  # O, F, S, Cl, Br, I
_BOND_CHARGE = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2}
_STRUCTURAL_METAL_NUMBERS = frozenset(Chem.GetPeriodicTable().GetAtomicNumber(s) for s in STRUCTURAL_METALS)
_BONDED_GROUP_1_2_METAL = Chem.MolFromSmarts("[Li,Na,K,Rb,Cs,Fr,Be,Mg,Ca,Sr,Ba,Ra;!D0]")
# Carbon bonded to H, to C or by a single or double bond to N: acetate, urea and guanidine are
# organic; carbonate, cyanide, cyanate and thiocyanate (C–O only, or C≡N) are not.
_ORGANIC_CARBON = Chem.MolFromSmarts("[#6;!H0,$([#6]~[#6]),$([#6]-,=[#7])]")
_LARGEST_ORGANIC = rdMolStandardize.LargestFragmentChooser(preferOrganic=True)


def _by_size(table: tuple[tuple[str, str], ...]) -> dict[tuple[int, int], list[tuple[str, Chem.Mol]]]:
    """Patterns by (atoms, bonds): a fragment is a listed salt only if it is the whole pattern."""
    buckets: dict[tuple[int, int], list[tuple[str, Chem.Mol]]] = defaultdict(list)
    for name, smarts in table:
        pattern = Chem.MolFromSmarts(smarts)
        buckets[(pattern.GetNumAtoms(), pattern.GetNumBonds())].append((name, pattern))
    return dict(buckets)


_SOLVENT_PATTERNS = _by_size(SOLVENTS)
_SALT_PATTERNS = _by_size(SALTS)


@dataclass(frozen=True, slots=True)
class FragmentParent:
    mol: Chem.Mol
    removed: tuple[str, ...]  # names of the removed fragments (solvents, counter-ions, smaller parts)
    kept_whole: bool  # a metal complex or organometallic: every non-solvent fragment was kept


def break_ionic_metal_bonds(mol: Chem.Mol) -> Chem.Mol:
    """Rule 1: the salt bonds of alkali and alkaline-earth metals become ions (a new molecule if any)."""
    if not mol.HasSubstructMatch(_BONDED_GROUP_1_2_METAL):  # in C++: most molecules stop here
        return mol
    bonds = [bond for bond in mol.GetBonds() if _is_ionic(bond)]
    if not bonds:
        return mol
    editable = Chem.RWMol(mol)
    for bond in bonds:
        metal, partner = _metal_first(bond.GetBeginAtom(), bond.GetEndAtom())
        charge = _BOND_CHARGE[bond.GetBondType()]
        editable.RemoveBond(metal.GetIdx(), partner.GetIdx())
        editable.GetAtomWithIdx(metal.GetIdx()).SetFormalCharge(metal.GetFormalCharge() + charge)
        editable.GetAtomWithIdx(partner.GetIdx()).SetFormalCharge(partner.GetFormalCharge() - charge)
    result = editable.GetMol()
    Chem.SanitizeMol(result)
    return result


def fragment_parent(mol: Chem.Mol) -> FragmentParent:
    """Rules 2–5 on a sanitized molecule whose ionic metal bonds are broken (the input if one fragment)."""
    if len(Chem.GetMolFrags(mol)) == 1:
        return FragmentParent(mol, (), False)
    fragments = Chem.GetMolFrags(mol, asMols=True)
    removed: list[str] = []
    solvents = _named(fragments, _SOLVENT_PATTERNS)
    remaining = [fragment for fragment, name in solvents if name is None] or list(fragments)
    if len(remaining) < len(fragments):
        removed += [name for _, name in solvents if name is not None]
    if any(_is_complex(fragment) for fragment in remaining):
        return FragmentParent(_combined(remaining), tuple(removed), True)
    salts = _named(remaining, _SALT_PATTERNS)
    unlisted = [fragment for fragment, name in salts if name is None]
    if unlisted:
        parents = unlisted if any(_is_organic(fragment) for fragment in unlisted) else []
    else:  # only counter-ions: the organic ones are the parent (sodium acetate is acetic acid)
        parents = [fragment for fragment in remaining if _is_organic(fragment)]
    if not parents:  # nothing organic would be left: an inorganic substance, registered as itself
        return FragmentParent(_combined(remaining), tuple(removed), False)
    removed += [name for fragment, name in salts if name is not None and all(fragment is not p for p in parents)]
    distinct = list({Chem.MolToSmiles(fragment): fragment for fragment in parents}.values())
    removed += ["duplicate"] * (len(parents) - len(distinct))
    if len(distinct) == 1:
        return FragmentParent(Chem.Mol(distinct[0]), tuple(removed), False)
    removed += ["smaller fragment"] * (len(distinct) - 1)
    return FragmentParent(_LARGEST_ORGANIC.choose(_combined(distinct)), tuple(removed), False)


def _is_ionic(bond: Chem.Bond) -> bool:
    if bond.GetBondType() not in _BOND_CHARGE:
        return False
    metal, partner = _metal_first(bond.GetBeginAtom(), bond.GetEndAtom())
    number = metal.GetAtomicNum()
    if number in ALKALI_METALS:
        return partner.GetAtomicNum() in _IONIC_PARTNERS
    if number in ALKALINE_EARTH_METALS:
        return all(n.GetAtomicNum() in _ALKALINE_EARTH_PARTNERS for n in metal.GetNeighbors())
    return False


def _metal_first(a: Chem.Atom, b: Chem.Atom) -> tuple[Chem.Atom, Chem.Atom]:
    return (b, a) if b.GetAtomicNum() in ALKALI_METALS | ALKALINE_EARTH_METALS else (a, b)


def _named(
    fragments: tuple[Chem.Mol, ...] | list[Chem.Mol], patterns: dict[tuple[int, int], list[tuple[str, Chem.Mol]]]
) -> list[tuple[Chem.Mol, str | None]]:
    """Each fragment with the name of the listed pattern it is exactly (None if none)."""
    return [(fragment, _match(fragment, patterns)) for fragment in fragments]


def _match(fragment: Chem.Mol, patterns: dict[tuple[int, int], list[tuple[str, Chem.Mol]]]) -> str | None:
    for name, pattern in patterns.get((fragment.GetNumAtoms(), fragment.GetNumBonds()), ()):
        if fragment.HasSubstructMatch(pattern):
            return name
    return None


def _is_complex(fragment: Chem.Mol) -> bool:
    """A structural metal anywhere, or any metal bonded to another atom (rule 1 left it bonded)."""
    return any(
        atom.GetAtomicNum() in _STRUCTURAL_METAL_NUMBERS or (atom.GetAtomicNum() in _METALS and atom.GetDegree())
        for atom in fragment.GetAtoms()
    )


def _is_organic(fragment: Chem.Mol) -> bool:
    """See _ORGANIC_CARBON."""
    return fragment.HasSubstructMatch(_ORGANIC_CARBON)


def _combined(fragments: list[Chem.Mol]) -> Chem.Mol:
    combined = fragments[0]
    for fragment in fragments[1:]:
        combined = Chem.CombineMols(combined, fragment)
    return Chem.Mol(combined)
