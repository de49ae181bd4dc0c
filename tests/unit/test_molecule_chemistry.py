import pickle
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import rdkit
from rdkit import Chem, DataStructs, rdBase
from rdkit.Chem import rdFingerprintGenerator, rdMolDescriptors

from services.molecule.domain import chemistry, fragment_parent, properties
from services.molecule.domain.chemistry import InvalidStructure, Registered, register, register_many

NCI = Path(rdkit.__file__).parent / "Data" / "NCI"
ASPIRIN = "CC(=O)Oc1ccccc1C(=O)O"
BENZOIC_ACID = "OC(=O)c1ccccc1"


@pytest.fixture(scope="module")
def nci() -> list[tuple[str, Registered | InvalidStructure]]:
    """first_5K.smi (4,999 real, messy NCI structures) through register_many, with its throughput."""
    smiles = [line.split()[0] for line in (NCI / "first_5K.smi").read_text().splitlines() if line.strip()]
    started = time.perf_counter()
    results = register_many(smiles)
    elapsed = time.perf_counter() - started
    print(f"\nregister_many over first_5K.smi: {len(smiles) / elapsed:.0f} molecules/s on one core")
    return list(zip(smiles, results, strict=True))


# --- standardization and identity -------------------------------------------------------------


def test_salt_is_stripped_and_shares_the_parents_identity() -> None:
    salt = register(ASPIRIN + ".[Na+]")
    parent = register(ASPIRIN)
    assert salt.inchi_key == parent.inchi_key == "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    assert salt.canonical_smiles == parent.canonical_smiles
    assert salt.original_smiles == ASPIRIN + ".[Na+]"
    assert (salt.salt_stripped, parent.salt_stripped) == (True, False)


def test_carboxylate_salt_is_neutralized_to_the_acid() -> None:
    salt = register("[Na+].[O-]C(=O)c1ccccc1")
    acid = register(BENZOIC_ACID)
    assert (salt.inchi_key, salt.canonical_smiles, salt.formula) == (
        acid.inchi_key,
        acid.canonical_smiles,
        "C7H6O2",
    )
    assert salt.salt_stripped and salt.neutralized
    assert not acid.neutralized


@pytest.mark.parametrize(
    ("charged", "neutral"),
    [
        ("C[NH3+]", "CN"),
        ("CCC(=O)[O-]", "CCC(=O)O"),
        ("C[NH3+].[Cl-]", "CN"),  # hydrochloride
        ("CC(=O)[O-].[K+]", "CC(=O)O"),
        ("[Na]OC(=O)c1ccccc1", BENZOIC_ACID),  # covalent metal: disconnected, then neutralized
        ("c1ccccc1C(=O)[O-].c1ccccc1C(=O)[O-].[Ca+2]", BENZOIC_ACID),
        ("CCCCN(CCCC)CCCN.OP(O)(O)=O", "CCCCN(CCCC)CCCN"),  # phosphate salt
    ],
)
def test_charged_and_salt_forms_register_as_the_neutral_parent(charged: str, neutral: str) -> None:
    assert register(charged).inchi_key == register(neutral).inchi_key
    assert register(charged).canonical_smiles == register(neutral).canonical_smiles


def test_permanent_charges_and_zwitterions_are_kept() -> None:
    quaternary = register("C[N+](C)(C)C.[Cl-]")
    assert quaternary.canonical_smiles == "C[N+](C)(C)C"
    assert quaternary.salt_stripped and not quaternary.neutralized
    betaine = register("C[N+](C)(C)CC(=O)[O-]")
    assert betaine.canonical_smiles == "C[N+](C)(C)CC(=O)[O-]"
    nitro = register("c1ccccc1N(=O)=O")  # normalized to the charge-separated form, not "neutralized"
    assert nitro.canonical_smiles == "O=[N+]([O-])c1ccccc1"
    assert not nitro.neutralized


@pytest.mark.parametrize(
    "spellings",
    [
        [BENZOIC_ACID, "c1ccccc1C(O)=O", "C1=CC=CC=C1C(=O)O", "[H]OC(=O)c1ccccc1", "O=C(O)C1=CC=CC=C1"],
        ["CCO", "OCC", "C(C)O", "[CH3][CH2][OH]", "C-C-O"],
        ["c1ccccc1N(=O)=O", "c1ccccc1[N+](=O)[O-]", "[O-][N+](=O)c1ccccc1"],
        ["C[C@H](N)C(=O)O", "N[C@@H](C)C(=O)O", "OC(=O)[C@H](C)N"],  # L-alanine
        ["Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CN1C=NC2=C1C(=O)N(C)C(=O)N2C"],  # caffeine
    ],
)
def test_same_molecule_written_differently_has_one_identity(spellings: list[str]) -> None:
    results = [register(smiles) for smiles in spellings]
    assert len({r.inchi_key for r in results}) == 1
    assert len({r.canonical_smiles for r in results}) == 1
    assert len({(r.morgan_fp, r.pattern_fp) for r in results}) == 1


def test_stereoisomers_stay_distinct() -> None:
    assert register("F[C@H](Cl)Br").inchi_key != register("F[C@@H](Cl)Br").inchi_key
    assert register("C/C=C/C").inchi_key != register("C/C=C\\C").inchi_key


def test_tautomer_canonicalization_is_optional() -> None:
    hydroxy, pyridone = "Oc1ccccn1", "O=c1cccc[nH]1"
    # The standard InChIKey already treats these as one molecule; canonical SMILES only with the option.
    assert register(hydroxy).inchi_key == register(pyridone).inchi_key
    assert register(hydroxy).canonical_smiles != register(pyridone).canonical_smiles
    assert (
        register(hydroxy, tautomers=True).canonical_smiles
        == register(pyridone, tautomers=True).canonical_smiles
    )


def test_a_normalization_that_breaks_aromaticity_keeps_the_structure_as_drawn() -> None:
    # Molsidomine (mesoionic): RDKit's normalizer leaves it unkekulizable, and the plain
    # Cleanup → Uncharger pipeline then adds two hydrogens. We keep the drawn structure.
    molsidomine = register("CCOC(=O)[N-]c1c[n+](N2CCOCC2)no1")
    assert molsidomine.formula == "C9H14N4O4"
    assert molsidomine.canonical_smiles == "CCOC(=O)[N-]c1c[n+](N2CCOCC2)no1"


# --- the parent: metals, counter-ions, solvents (fragment_parent's rules) -------------------

CISPLATIN = "N.N.Cl[Pt]Cl"
FERROCENE = "[cH-]1cccc1.[cH-]1cccc1.[Fe+2]"
GADOTERATE = "[Gd+3].[O-]C(=O)CN1CCN(CC([O-])=O)CCN(CC([O-])=O)CCN(CC([O-])=O)CC1"
MEGLUMINE = "CNC[C@H](O)[C@@H](O)[C@H](O)[C@H](O)CO"
STEARATE = "CCCCCCCCCCCCCCCCCC(=O)[O-]"
KETOROLAC = "OC(=O)C1CCn2c1ccc2C(=O)c1ccccc1"
METFORMIN = "CN(C)C(=N)NC(N)=N"

# (case, input, canonical SMILES of the registered parent, fragments removed)
PARENTS = [
    # Metal complexes and organometallics keep their metal (and, as ChEMBL does, all their fragments).
    ("cisplatin", CISPLATIN, "N.N.[Cl][Pt][Cl]", False),
    ("cisplatin, ionic", "N.N.[Cl-].[Cl-].[Pt+2]", "N.N.[Cl-].[Cl-].[Pt+2]", False),
    ("cisplatin, dative bonds", "N->[Pt](<-N)(Cl)Cl", "[NH3]->[Pt](<-[NH3])([Cl])[Cl]", False),
    ("carboplatin", "N.N.O=C1O[Pt]OC(=O)C12CCC2", "N.N.O=C1[O][Pt][O]C(=O)C12CCC2", False),
    ("ferrocene", FERROCENE, "[Fe+2].c1cc[cH-]c1.c1cc[cH-]c1", False),
    ("iron(III) chloride", "[Fe+3].[Cl-].[Cl-].[Cl-]", "[Cl-].[Cl-].[Cl-].[Fe+3]", False),
    (
        "ferrous gluconate",
        "[Fe+2].OCC(O)C(O)C(O)C(O)C([O-])=O.OCC(O)C(O)C(O)C(O)C([O-])=O",
        "O=C([O-])C(O)C(O)C(O)C(O)CO.O=C([O-])C(O)C(O)C(O)C(O)CO.[Fe+2]",
        False,
    ),
    (
        "zinc pyrithione, Zn–O bonds drawn",
        "[S-]c1cccc[n+]1O[Zn]O[n+]1ccccc1[S-]",
        "S=c1ccccn1[O][Zn][O]n1ccccc1=S",
        False,
    ),
    (
        "copper salen complex",
        "C1C[N+]2=CC3=CC=CC=C3O[Cu]24OC5=CC=CC=C5C=[N+]14",
        "C1=[N+]2CC[N+]3=Cc4ccccc4[O][Cu]23[O]c2ccccc21",
        False,
    ),
    ("tributyltin chloride", "CCCC[Sn](CCCC)(CCCC)Cl", "CCC[CH2][Sn]([Cl])([CH2]CCC)[CH2]CCC", False),
    ("tributyltin chloride, ionic", "[Cl-].CCCC[Sn+](CCCC)CCCC", "CCC[CH2][Sn+]([CH2]CCC)[CH2]CCC.[Cl-]", False),
    (
        "gadoterate meglumine",
        f"{MEGLUMINE}.{GADOTERATE}",
        f"{MEGLUMINE}.O=C([O-])CN1CCN(CC(=O)[O-])CCN(CC(=O)O)CCN(CC(=O)[O-])CC1.[Gd+3]",
        False,
    ),
    ("methylmagnesium bromide (Grignard)", "C[Mg]Br", "[CH3][Mg][Br]", False),
    ("butyllithium", "CCCC[Li]", "[Li][CH2]CCC", False),
    ("Mg–N complex (chlorophyll-like)", "c1ccn([Mg]n2cccc2)c1", "c1cc[n]([Mg][n]2cccc2)c1", False),
    (
        "silver sulfadiazine, Ag–N bond drawn",
        "Nc1ccc(cc1)S(=O)(=O)N([Ag])c1ncccn1",
        "Nc1ccc(S(=O)(=O)[N]([Ag])c2ncccn2)cc1",
        False,
    ),
    # Inorganic substances with no organic part register as themselves.
    ("sodium chloride", "[Na+].[Cl-]", "[Cl-].[Na+]", False),
    ("sodium chloride, drawn covalent", "[Na]Cl", "[Cl-].[Na+]", False),
    ("potassium chloride", "[K+].[Cl-]", "[Cl-].[K+]", False),
    ("lithium carbonate", "[Li+].[Li+].[O-]C([O-])=O", "O=C([O-])[O-].[Li+].[Li+]", False),
    ("sodium sulfate", "[Na+].[Na+].[O-]S([O-])(=O)=O", "O=S(=O)([O-])[O-].[Na+].[Na+]", False),
    ("ammonium chloride", "[NH4+].[Cl-]", "Cl.N", False),
    ("potassium cyanide", "[K+].[C-]#N", "[C-]#N.[K+]", False),
    ("zinc chloride", "[Zn+2].[Cl-].[Cl-]", "[Cl-].[Cl-].[Zn+2]", False),
    # Salts of an organic parent: counter-ions go, the parent is neutralized.
    ("sodium acetate", "CC(=O)[O-].[Na+]", "CC(=O)O", True),
    ("sodium acetate, drawn covalent", "CC(=O)O[Na]", "CC(=O)O", True),
    ("ammonium acetate", "CC(=O)[O-].[NH4+]", "CC(=O)O", True),
    ("magnesium stearate", f"{STEARATE}.{STEARATE}.[Mg+2]", "CCCCCCCCCCCCCCCCCC(=O)O", True),
    (
        "magnesium stearate, drawn covalent",
        f"{STEARATE[:-4]}O[Mg]OC(=O)CCCCCCCCCCCCCCCCC",
        "CCCCCCCCCCCCCCCCCC(=O)O",
        True,
    ),
    ("zinc pyrithione, free Zn2+ (a counter-ion)", "[O-]n1ccccc1=S.[O-]n1ccccc1=S.[Zn+2]", "On1ccccc1=S", True),
    ("silver sulfadiazine, free Ag+", "Nc1ccc(cc1)S(=O)(=O)[N-]c1ncccn1.[Ag+]", "Nc1ccc(S(=O)(=O)Nc2ncccn2)cc1", True),
    ("sodium saccharin", "[Na]N1C(=O)c2ccccc2S1(=O)=O", "O=C1NS(=O)(=O)c2ccccc21", True),
    ("aspirin + HCl", ASPIRIN + ".Cl", "CC(=O)Oc1ccccc1C(=O)O", True),
    ("metformin hydrochloride", METFORMIN + ".Cl", "CN(C)C(=N)NC(=N)N", True),
    ("methylammonium chloride", "C[NH3+].[Cl-]", "CN", True),
    ("ketorolac tromethamine (tris salt)", f"{KETOROLAC}.NC(CO)(CO)CO", "O=C(c1ccccc1)c1ccc2n1CCC2C(=O)O", True),
    ("tris hydrochloride", "NC(CO)(CO)CO.Cl", "NC(CO)(CO)CO", True),
    ("guanidine carbonate", "NC(N)=N.OC(O)=O", "N=C(N)N", True),  # guanidine is organic, carbonate not
    ("guanidine thiocyanate", "NC(N)=N.SC#N", "N=C(N)N", True),
    ("urea oxalate", "NC(N)=O.OC(=O)C(O)=O", "NC(N)=O", True),
    ("dibutylamine oleate", "CCCCCCCCC=CCCCCCCCC(O)=O.CCCCNCCCC", "CCCCNCCCC", True),
    ("hydrazine borate (nothing organic)", "NN.OB1OB(O1)OB2OB(O)O2", "NN.OB1OB(OB2OB(O)O2)O1", False),
    ("hemisulfate (two parent molecules)", "CN.CN.OS(O)(=O)=O", "CN", True),
    (
        "diphenhydramine, unusual counter-ion pair",
        "[Na+].[O-]C(=O)c1ccccc1.CN(C)CCOC(c1ccccc1)c1ccccc1",
        "CN(C)CCOC(c1ccccc1)c1ccccc1",
        True,
    ),
    # Solvates.
    ("aspirin dihydrate", "O.O." + ASPIRIN, "CC(=O)Oc1ccccc1C(=O)O", True),
    ("aspirin DMSO solvate", ASPIRIN + ".CS(C)=O", "CC(=O)Oc1ccccc1C(=O)O", True),
    ("aspirin ethanol solvate", ASPIRIN + ".CCO", "CC(=O)Oc1ccccc1C(=O)O", True),
    ("ethanol hydrate", "CCO.O", "CCO", True),
    # One fragment: nothing to choose.
    ("ammonia", "N", "N", False),
    ("DMSO", "CS(C)=O", "C[S+](C)[O-]", False),
]


@pytest.mark.parametrize(("case", "smiles", "parent", "stripped"), PARENTS, ids=[row[0] for row in PARENTS])
def test_the_registered_parent_follows_the_documented_rules(
    case: str, smiles: str, parent: str, stripped: bool
) -> None:
    registered = register(smiles)
    assert (registered.canonical_smiles, registered.salt_stripped) == (parent, stripped), case
    again = register(registered.canonical_smiles)  # a parent is its own parent
    assert (again.inchi_key, again.canonical_smiles) == (registered.inchi_key, registered.canonical_smiles)


@pytest.mark.parametrize(
    ("compound", "not_this"),
    [
        (CISPLATIN, "N"),  # not ammonia
        ("N.N.O=C1O[Pt]OC(=O)C12CCC2", "OC(=O)C1(CCC1)C(=O)O"),  # carboplatin is not its dicarboxylic acid
        (FERROCENE, "C1=CC=CC1"),  # not cyclopentadiene
        ("[Na+].[Cl-]", "Cl"),  # sodium chloride is not hydrogen chloride
        ("[Na+].[Cl-]", "[K+].[Cl-]"),
        ("[Li+].[Li+].[O-]C([O-])=O", "OC(=O)O"),  # lithium carbonate is not carbonic acid
        ("CCCC[Sn](CCCC)(CCCC)Cl", "CCCC"),
        (GADOTERATE, "OC(=O)CN1CCN(CC(O)=O)CCN(CC(O)=O)CCN(CC(O)=O)CC1"),  # not DOTA
        ("[S-]c1cccc[n+]1O[Zn]O[n+]1ccccc1[S-]", "On1ccccc1=S"),  # the drawn complex is not pyrithione
        ("[NH4+].[Cl-]", "N"),
    ],
)
def test_distinct_compounds_keep_distinct_identities(compound: str, not_this: str) -> None:
    assert register(compound).inchi_key != register(not_this).inchi_key


@pytest.mark.parametrize(
    "drawings",
    [
        # Standard InChI disconnects metal–ligand bonds: one complex, however its bonds are drawn.
        [CISPLATIN, "N.N.[Cl-].[Cl-].[Pt+2]", "[NH3+][Pt-2]([NH3+])(Cl)Cl", "N->[Pt](<-N)(Cl)Cl"],
        [FERROCENE, "C1=CC=C[CH-]1.C1=CC=C[CH-]1.[Fe+2]"],
        ["[Fe+3].[Cl-].[Cl-].[Cl-]", "Cl[Fe](Cl)Cl"],
        ["CCCC[Sn](CCCC)(CCCC)Cl", "[Cl-].CCCC[Sn+](CCCC)CCCC"],
        ["[Na+].[Cl-]", "[Na]Cl"],
        # Salts, solvates and the free parent: one molecule.
        [METFORMIN, METFORMIN + ".Cl", "CN(C)C(=N)NC(N)=[NH2+].[Cl-]"],
        ["CC(=O)O", "CC(=O)[O-].[Na+]", "CC(=O)[O-].[K+]", "CC(=O)O[Na]", "CC(=O)[O-].[NH4+]"],
        [ASPIRIN, ASPIRIN + ".O", ASPIRIN + ".CS(C)=O", ASPIRIN + ".CCO", ASPIRIN + ".Cl"],
        [KETOROLAC, f"{KETOROLAC}.NC(CO)(CO)CO", "[O-]C(=O)C1CCn2c1ccc2C(=O)c1ccccc1.[NH3+]C(CO)(CO)CO"],
    ],
)
def test_one_compound_however_drawn_has_one_identity(drawings: list[str]) -> None:
    assert len({register(smiles).inchi_key for smiles in drawings}) == 1


def test_complexes_are_described_with_their_metal() -> None:
    cisplatin = register(CISPLATIN)
    assert cisplatin.formula == "H6Cl2N2Pt"
    assert cisplatin.molecular_weight == pytest.approx(300.05, abs=0.01)
    assert cisplatin.inchi_key == "LXZZYRPGZAFOLE-UHFFFAOYSA-L"  # PubChem's cisplatin
    assert register(FERROCENE).inchi_key == "KTWOOEGAPBSYNW-UHFFFAOYSA-N"  # PubChem's ferrocene
    assert register("[Na+].[Cl-]").inchi_key == "FAPWRFPIFSIZLT-UHFFFAOYSA-M"  # PubChem's sodium chloride


def test_the_salt_and_solvent_lists_are_chembls_and_all_parse() -> None:
    assert len(fragment_parent.SALTS) == 163 and len(fragment_parent.SOLVENTS) == 9
    for _, smarts in (*fragment_parent.SALTS, *fragment_parent.SOLVENTS):
        assert Chem.MolFromSmarts(smarts) is not None, smarts
    assert {"Pt", "Fe", "Gd", "Sn", "Cu"} <= fragment_parent.STRUCTURAL_METALS
    assert "Zn" not in fragment_parent.STRUCTURAL_METALS  # ChEMBL: zinc compounds are mostly simple salts


# --- invalid input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("smiles", "reason"),
    [
        ("C1CC", "invalid SMILES: unclosed ring"),
        ("C1CC2CC1", "invalid SMILES: unclosed ring"),
        ("C11", "invalid SMILES: duplicated ring closure"),
        ("C((C", "invalid SMILES: syntax error at position 3"),
        ("C)C", "invalid SMILES: extra close parentheses at position 2"),
        ("C==C", "invalid SMILES: syntax error at position 3"),
        ("[Xx]", "invalid SMILES: unknown element 'Xx' at position 2"),
        ("CC[Qq]C", "invalid SMILES: unknown element 'Qq' at position 4"),
        ("CCXC", "invalid SMILES: unknown element 'X' at position 3"),
        ("CCNa", "invalid SMILES: element 'Na' at position 3 must be written in brackets: [Na]"),
        ("CH4", "invalid SMILES: element 'H' at position 2 must be written in brackets: [H]"),
        ("CN(C)(C)(C)C", "explicit valence for atom # 1 N, 5, is greater than permitted"),
        ("[CH5]", "explicit valence for atom # 0 C, 5, is greater than permitted"),
        ("FC(F)(F)(F)F", "explicit valence for atom # 1 C, 5, is greater than permitted"),
        ("c1cccc1", "can't kekulize (aromaticity failure): unkekulized atoms: 0 1 2 3 4"),
        ("n1cccc1", "can't kekulize (aromaticity failure)"),
        ("CcC", "can't kekulize (aromaticity failure): non-ring atom 1 marked aromatic"),
        ("", "empty SMILES"),
        ("   \t\r\n", "empty SMILES"),
        ("CCO ethanol", "whitespace inside the SMILES at position 4"),
        ("CCO |$;;$|", "whitespace inside the SMILES at position 4"),  # CXSMILES is not accepted
        ("C\tC", "whitespace inside the SMILES at position 2"),
        (
            "\x00\x01\x02\xff\xfe",
            "not a SMILES: character '\\x00' at position 1 (binary data or non-ASCII text)",
        ),
        ("CC\x1bO", "not a SMILES: character '\\x1b' at position 3"),
        ("CCÖ", "not a SMILES: character 'Ö' at position 3"),
        (
            "C" * (chemistry.MAX_SMILES_LENGTH + 1),
            f"SMILES too long: 2001 characters (limit {chemistry.MAX_SMILES_LENGTH})",
        ),
        ("C" * 10_000_000, "SMILES too long: 10000000 characters"),
        ("C" * 600, f"too many atoms: 600 heavy atoms (limit {chemistry.MAX_HEAVY_ATOMS})"),
        ("[H][H]", "no heavy atoms in the parent structure"),
        ("[H+]", "no heavy atoms in the parent structure"),
        ("*C", "contains dummy atoms ('*')"),
    ],
)
def test_invalid_input_is_rejected_with_a_specific_reason(smiles: str, reason: str) -> None:
    with pytest.raises(InvalidStructure) as error:
        register(smiles)
    assert error.value.reason.startswith(reason), error.value.reason


def test_non_text_input_is_rejected_not_crashed_on() -> None:
    results = register_many([None, 42, b"CCO", "CCO"])  # type: ignore[list-item]
    assert [r.reason if isinstance(r, InvalidStructure) else "ok" for r in results] == [
        "empty SMILES",
        "SMILES must be text, not int",
        "SMILES must be text, not bytes",
        "ok",
    ]


def test_binary_junk_of_every_byte_is_rejected() -> None:
    junk = bytes(range(256)).decode("latin-1")
    assert isinstance(register_many([junk, junk[::-1], junk[33:127]])[0], InvalidStructure)
    for result in register_many([junk[i : i + 16] for i in range(0, 256, 16)]):
        assert isinstance(result, InvalidStructure)
        assert result.reason


def test_surrounding_whitespace_is_ignored() -> None:
    assert register("  CCO\r\n").original_smiles == "CCO"


def test_results_survive_pickling_for_process_pools() -> None:
    results = register_many([ASPIRIN, "C1CC"])
    assert [type(r) for r in pickle.loads(pickle.dumps(results))] == [Registered, InvalidStructure]
    assert pickle.loads(pickle.dumps(results))[1].reason == "invalid SMILES: unclosed ring"
    assert pickle.loads(pickle.dumps(results))[0] == results[0]


# --- calculated properties ------------------------------------------------------------------


def test_aspirin_properties() -> None:
    aspirin = register(ASPIRIN)
    assert aspirin.formula == "C9H8O4"
    assert (
        aspirin.molecular_weight == aspirin.calculated["molecular_weight"] == pytest.approx(180.159, abs=1e-3)
    )
    assert aspirin.calculated == {
        "molecular_weight": pytest.approx(180.159, abs=1e-3),
        "exact_mass": pytest.approx(180.0423, abs=1e-4),
        "logp": pytest.approx(1.3101, abs=1e-4),
        "tpsa": pytest.approx(63.6, abs=1e-2),
        "num_atoms": 21,  # 13 heavy atoms + 8 hydrogens
        "num_heavy_atoms": 13,
        "num_rings": 1,
        "num_rotatable_bonds": 2,
        "num_h_donors": 1,
        "num_h_acceptors": 3,
        "lipinski_violations": 0,
    }


def test_every_calculated_property_is_present_typed_and_within_its_declared_range() -> None:
    for smiles in (ASPIRIN, "CCO", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O"):
        calculated = register(smiles).calculated
        assert list(calculated) == list(properties.CALCULATED_PROPERTIES)
        for name, value in calculated.items():
            parsed = properties.check_value(name, value)
            assert type(value) is type(parsed.value), name


def test_lipinski_violations_count_the_four_rules() -> None:
    triacontane = register("C" * 40)  # MW 563 and logP 15.9
    assert triacontane.calculated["lipinski_violations"] == 2
    cyclosporin = register(
        "CC[C@H]1C(=O)N(CC(=O)N([C@H](C(=O)N[C@H](C(=O)N([C@H](C(=O)N[C@H](C(=O)N[C@@H](C(=O)N([C@H](C(=O)"
        "N([C@H](C(=O)N([C@H](C(=O)N([C@H](C(=O)N1)[C@@H]([C@H](C)C/C=C/C)O)C)C(C)C)C)CC(C)C)C)CC(C)C)C)C)C)"
        "CC(C)C)C)C(C)C)CC(C)C)C)C"
    )
    values = cyclosporin.calculated
    assert values["molecular_weight"] > 500 and values["num_h_acceptors"] > 10
    expected = (
        (values["molecular_weight"] > 500)
        + (values["logp"] > 5)
        + (values["num_h_donors"] > 5)
        + (values["num_h_acceptors"] > 10)
    )
    assert values["lipinski_violations"] == expected


# The two entries of first_5k.tpsa.csv where RDKit's TPSA differs from Ertl's program by design
# (a hypervalent perchlorate and a nitronate written as a carbanion).
RDKIT_TPSA_DIFFERS = {
    "CN(C)CCC1(CCN(C)C)C(=O)CCC2=C1C=CC=C2.OCl(=O)(=O)=O",
    "CCC1=C[N+](=O)[C-](C)C=C1",
}


def reference_tpsa() -> dict[str, float]:
    rows = (line.rsplit(",", 1) for line in (NCI / "first_5k.tpsa.csv").read_text().splitlines())
    return {row[0]: float(row[1]) for row in rows if len(row) == 2 and not row[0].startswith("#")}


def test_rdkit_tpsa_of_the_input_matches_the_reference_file_except_where_documented() -> None:
    # first_5k.tpsa.csv (Ertl's tpsa.c via Daylight) describes each molecule as written, salts and
    # all, so it is compared with RDKit's TPSA of the input structure, over the whole file.
    with rdBase.BlockLogs():
        mols = {smiles: Chem.MolFromSmiles(smiles) for smiles in reference_tpsa()}
    differs = {
        smiles
        for smiles, expected in reference_tpsa().items()
        if mols[smiles] is not None and abs(rdMolDescriptors.CalcTPSA(mols[smiles]) - expected) > 0.01
    }
    assert differs == RDKIT_TPSA_DIFFERS


def test_registered_tpsa_matches_the_reference_where_standardization_keeps_the_structure(nci) -> None:
    reference = reference_tpsa()
    unchanged = [
        (smiles, result)
        for smiles, result in nci
        if isinstance(result, Registered)
        and result.canonical_smiles == Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
        and smiles in reference
        and smiles not in RDKIT_TPSA_DIFFERS
    ]
    assert len(unchanged) > 4000
    for smiles, result in unchanged:
        assert result.calculated["tpsa"] == pytest.approx(reference[smiles], abs=0.01), smiles


def test_sulfoxide_tpsa_follows_rdkits_charge_separated_normal_form() -> None:
    # Documented difference: RDKit's normalizer writes S=O as [S+][O-], whose TPSA contribution is
    # 23.06 instead of 17.07 (the reference value for DMSO as written).
    dmso = register("CS(C)=O")
    assert dmso.canonical_smiles == "C[S+](C)[O-]"
    assert dmso.calculated["tpsa"] == pytest.approx(23.06, abs=0.01)


# --- the whole of first_5K.smi --------------------------------------------------------------


def test_register_many_over_nci_first_5k_reports_every_invalid_entry(nci) -> None:
    assert len(nci) == 4999
    invalid = [(smiles, result) for smiles, result in nci if isinstance(result, InvalidStructure)]
    # Exactly the entries RDKit itself cannot sanitize (hypervalent metals, Si, P, O), each with its reason.
    with rdBase.BlockLogs():
        assert {smiles for smiles, _ in invalid} == {s for s, _ in nci if Chem.MolFromSmiles(s) is None}
    assert len(invalid) == 8
    for _smiles, result in invalid:
        assert result.reason.startswith("explicit valence for atom #"), result.reason
    good = [result for _, result in nci if isinstance(result, Registered)]
    assert sum(r.salt_stripped for r in good) > 100
    assert sum(r.neutralized for r in good) > 10
    assert all(len(r.inchi_key) == 27 for r in good)


def test_registered_structures_read_back_identically(nci) -> None:
    """The canonical SMILES is a faithful record: re-registering it gives the same molecule and bits."""
    for _, result in nci[:1000]:
        if isinstance(result, Registered):
            again = register(result.canonical_smiles)
            assert (again.inchi_key, again.canonical_smiles) == (result.inchi_key, result.canonical_smiles)
            assert (again.morgan_fp, again.pattern_fp) == (result.morgan_fp, result.pattern_fp)


# --- fingerprints ---------------------------------------------------------------------------


def on_bits(packed: bytes) -> list[int]:
    return [i for i in range(len(packed) * 8) if packed[i // 8] >> (i % 8) & 1]


def test_fingerprint_bytes_follow_the_documented_bit_order() -> None:
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    for smiles in (ASPIRIN, "CCO", "c1ccc2ccccc2c1", "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O"):
        result = register(smiles)
        mol = Chem.MolFromSmiles(result.canonical_smiles)
        assert len(result.morgan_fp) == len(result.pattern_fp) == chemistry.FINGERPRINT_BYTES == 256
        morgan = generator.GetFingerprint(mol)
        pattern = Chem.PatternFingerprint(mol, fpSize=2048)
        assert on_bits(result.morgan_fp) == list(morgan.GetOnBits())
        assert on_bits(result.pattern_fp) == list(pattern.GetOnBits())
        assert (
            result.morgan_fp == np.packbits(generator.GetFingerprintAsNumPy(mol), bitorder="little").tobytes()
        )
        as_int = int.from_bytes(result.morgan_fp, "little")
        assert all(as_int >> i & 1 for i in morgan.GetOnBits())
        assert bin(as_int).count("1") == morgan.GetNumOnBits()
        words = struct.unpack("<32Q", result.morgan_fp)  # 32 little-endian uint64 words
        assert sorted(64 * w + b for w, word in enumerate(words) for b in range(64) if word >> b & 1) == list(
            morgan.GetOnBits()
        )


def test_unpacked_fingerprints_give_rdkits_tanimoto() -> None:
    a, b = register(ASPIRIN), register("OC(=O)c1ccccc1O")
    x, y = int.from_bytes(a.morgan_fp, "little"), int.from_bytes(b.morgan_fp, "little")
    popcount_tanimoto = (x & y).bit_count() / (x | y).bit_count()
    rdkit_tanimoto = DataStructs.TanimotoSimilarity(
        chemistry.unpack_fingerprint(a.morgan_fp), chemistry.unpack_fingerprint(b.morgan_fp)
    )
    assert popcount_tanimoto == pytest.approx(rdkit_tanimoto)
    assert chemistry.pack_fingerprint(chemistry.unpack_fingerprint(a.pattern_fp)) == a.pattern_fp


@pytest.mark.parametrize(
    "query", ["c1ccccc1O", "C(=O)O", "[#7]", "[OX2H]", "C1=CC=CC=C1", "c1ccncc1", "[R2]", "[N+](=O)[O-]"]
)
def test_pattern_fingerprint_screen_never_drops_a_true_hit(nci, query: str) -> None:
    query_mol = chemistry.substructure_query(query)
    query_bits = int.from_bytes(chemistry.pattern_fingerprint(query_mol), "little")
    hits = screened_out = 0
    for _, result in nci[:1500]:
        if not isinstance(result, Registered):
            continue
        mol_bits = int.from_bytes(result.pattern_fp, "little")
        matches = Chem.MolFromSmiles(result.canonical_smiles).HasSubstructMatch(query_mol)
        passes = query_bits & ~mol_bits == 0
        assert passes or not matches, (query, result.canonical_smiles)
        hits += matches
        screened_out += not passes
    assert hits > 0
    assert query in ("[R2]", "[#7]", "C(=O)O") or screened_out > 0  # the screen does real work


# --- substructure queries -------------------------------------------------------------------


def test_substructure_query_reads_smiles_then_smarts() -> None:
    phenol = Chem.MolFromSmiles("Oc1ccccc1")
    assert phenol.HasSubstructMatch(chemistry.substructure_query("C1=CC=CC=C1"))  # Kekulé SMILES
    assert phenol.HasSubstructMatch(chemistry.substructure_query("[OX2H]c"))  # SMARTS
    assert phenol.HasSubstructMatch(chemistry.substructure_query("c1ccccc1", kind="smarts"))
    assert Chem.MolFromSmiles("CN").HasSubstructMatch(chemistry.substructure_query("[#7]"))  # SMARTS syntax
    nitrobenzene = Chem.MolFromSmiles("O=[N+]([O-])c1ccccc1")
    assert nitrobenzene.HasSubstructMatch(chemistry.substructure_query("[N+](=O)[O-]", kind="smiles"))
    assert Chem.MolFromSmiles("C[S+](C)[O-]").HasSubstructMatch(chemistry.substructure_query("C[S+][O-]"))
    assert not phenol.HasSubstructMatch(chemistry.substructure_query("C1=CC=CC=C1", kind="smarts"))
    with pytest.raises(InvalidStructure, match="can't kekulize"):
        chemistry.substructure_query("c1cccc1", kind="smiles")
    assert chemistry.substructure_query("c1cccc1").GetNumAtoms() == 5  # auto: a valid SMARTS fragment


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("C1CC", "invalid SMARTS: unclosed ring"),
        ("CC[", "invalid SMARTS: syntax error at position 3"),
        ("", "empty query"),
        ("c1ccccc1 phenyl", "whitespace inside the query at position 9"),
        ("\x00\x07", "not a query: character '\\x00' at position 1"),
        ("C" * (chemistry.MAX_QUERY_ATOMS + 1), f"query too large: {chemistry.MAX_QUERY_ATOMS + 1} atoms"),
        ("C" * (chemistry.MAX_QUERY_LENGTH + 1), "query too long"),
    ],
)
def test_bad_substructure_queries_say_why(query: str, reason: str) -> None:
    with pytest.raises(InvalidStructure) as error:
        chemistry.substructure_query(query)
    assert error.value.reason.startswith(reason), error.value.reason


# --- depiction ------------------------------------------------------------------------------


def test_svg_depiction() -> None:
    svg = chemistry.depict_svg(ASPIRIN, 320, 240)
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and svg.rstrip().endswith("</svg>")
    assert "width='320px'" in svg and "height='240px'" in svg


def test_png_depiction() -> None:
    png = chemistry.depict_png(ASPIRIN, 400, 300)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert png[12:16] == b"IHDR" and struct.unpack(">II", png[16:24]) == (400, 300)


@pytest.mark.parametrize(("width", "height"), [(49, 300), (300, 2001), (0, 0), (-5, 100)])
def test_depiction_sizes_are_bounded(width: int, height: int) -> None:
    with pytest.raises(ValueError, match="must be 50–2000 px"):
        chemistry.depict_svg("CCO", width, height)
    with pytest.raises(ValueError, match="must be 50–2000 px"):
        chemistry.depict_png("CCO", width, height)


def test_depiction_of_invalid_smiles_says_why() -> None:
    with pytest.raises(InvalidStructure, match="unclosed ring"):
        chemistry.depict_svg("C1CC")
    with pytest.raises(InvalidStructure, match="explicit valence"):
        chemistry.depict_png("CN(C)(C)(C)C")
