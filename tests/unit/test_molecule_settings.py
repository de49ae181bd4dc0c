"""The molecule service's typed settings: defaults, and a bad value names its variable."""

from __future__ import annotations

import pytest

from services.molecule.domain.uploads import ImportLimits
from services.molecule.service.search import Budgets
from services.molecule.settings import MoleculeSettings
from services.runtime.settings import SettingsError


def test_defaults_and_values() -> None:
    defaults = MoleculeSettings.from_env("molecule", {})
    assert defaults.csv_queue == "csv_chunks" and defaults.csv_processes >= 1
    assert defaults.import_chunk_rows == 5000
    assert defaults.import_limits == ImportLimits() and defaults.search_budgets == Budgets()
    given = MoleculeSettings.from_env(
        "molecule",
        {
            "MOLBRIDGE_CSV_QUEUE": "csv_test",
            "MOLBRIDGE_CSV_PROCESSES": "3",
            "MOLBRIDGE_MAX_UPLOAD_BYTES": "1024",
            "MOLBRIDGE_MAX_IMPORT_ROWS": "10",
            "MOLBRIDGE_IMPORT_CHUNK_ROWS": "200",
            "MOLBRIDGE_SEARCH_SIMILARITY_BUDGET_MS": "250",
        },
    )
    assert (given.csv_queue, given.csv_processes, given.import_chunk_rows) == ("csv_test", 3, 200)
    assert given.import_limits == ImportLimits(max_upload_bytes=1024, max_rows=10)
    assert given.search_budgets == Budgets(similarity_s=0.25, substructure_s=Budgets.substructure_s)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("MOLBRIDGE_CSV_PROCESSES", "many"),
        ("MOLBRIDGE_CSV_PROCESSES", "0"),
        ("MOLBRIDGE_MAX_UPLOAD_BYTES", "-1"),
        ("MOLBRIDGE_MAX_IMPORT_ROWS", "1e3"),
        ("MOLBRIDGE_IMPORT_CHUNK_ROWS", "0"),
        ("MOLBRIDGE_SEARCH_SUBSTRUCTURE_BUDGET_MS", "0"),
    ],
)
def test_a_bad_value_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        MoleculeSettings.from_env("molecule", {variable: value})
