"""Library rules (who may do what, valid inputs) and the distribution maths, without I/O."""

from __future__ import annotations

import struct
import uuid

import numpy as np
import pytest

from services.molecule.domain import distributions
from services.molecule.domain.library_rules import (
    MAX_BATCH,
    Action,
    Level,
    LibraryFacts,
    access_level,
    check_batch,
    check_bins,
    check_changes,
    check_grant,
    check_new,
    check_plot_size,
    may_see,
    molecules_not_found,
    require,
)
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, NotFoundError, ValidationError

ORG = str(uuid.uuid4())
OTHER_ORG = str(uuid.uuid4())
OWNER = str(uuid.uuid4())


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk (always the first)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def person(*roles: str, org: str = ORG, subject: str | None = None) -> Principal:
    return Principal(
        subject=subject or str(uuid.uuid4()), organization_id=org, organization_kind="PHARMA",
        roles=frozenset(roles or ("pharma_scientist",)),
    )


def library(visibility: str = "PRIVATE") -> LibraryFacts:
    return LibraryFacts(organization_id=ORG, owner_id=OWNER, visibility=visibility)


def test_owner_grant_and_organization_visibility_give_the_highest_level() -> None:
    owner = person(subject=OWNER)
    colleague = person()
    assert access_level(owner, library()) is Level.OWNER
    assert access_level(colleague, library()) is Level.NONE
    assert access_level(colleague, library(), Level.EDITOR) is Level.EDITOR
    assert access_level(colleague, library("ORGANIZATION")) is Level.VIEWER
    assert access_level(colleague, library("ORGANIZATION"), Level.EDITOR) is Level.EDITOR


def test_nobody_crosses_organizations_not_even_a_system_admin() -> None:
    stranger = person("system_admin", org=OTHER_ORG)
    same_id_other_org = person(org=OTHER_ORG, subject=OWNER)  # ids never match across orgs; still checked
    for principal in (stranger, same_id_other_org):
        level = access_level(principal, library("ORGANIZATION"), Level.EDITOR)
        assert level is Level.NONE
        assert not may_see(principal, library("ORGANIZATION"), level)
        with pytest.raises(NotFoundError):
            require(principal, library("ORGANIZATION"), level, Action.READ)


def test_organization_admins_see_private_libraries_but_not_their_contents() -> None:
    admin = person("pharma_admin")
    level = access_level(admin, library())
    assert level is Level.NONE and may_see(admin, library(), level)
    with pytest.raises(AuthorizationError) as denied:
        require(admin, library(), level, Action.READ)
    assert denied.value.metadata == {"required_level": "VIEWER"}
    with pytest.raises(NotFoundError):  # a scientist does not even learn it exists
        require(person(), library(), Level.NONE, Action.READ)


@pytest.mark.parametrize(
    ("level", "allowed"),
    [
        (Level.VIEWER, {Action.READ}),
        (Level.EDITOR, {Action.READ, Action.EDIT_DETAILS, Action.CHANGE_MOLECULES}),
        (Level.OWNER, set(Action)),
    ],
)
def test_each_level_allows_exactly_its_actions(level: Level, allowed: set[Action]) -> None:
    principal = person()
    for action in Action:
        if action in allowed:
            require(principal, library(), level, action)
        else:
            with pytest.raises(AuthorizationError):
                require(principal, library(), level, action)


def test_new_library_details_are_trimmed_defaulted_and_bounded() -> None:
    details = check_new("  Kinase hits  ", " first round ", "", "")
    assert (details.name, details.description, details.category, details.visibility) == (
        "Kinase hits", "first round", "GENERAL", "PRIVATE",
    )
    assert check_new("x" * 100, "", "LEAD_SERIES", "ORGANIZATION").name == "x" * 100
    with pytest.raises(ValidationError) as invalid:
        check_new("x" * 101, "d" * 2001, "NOPE", "PUBLIC")
    assert {f for f, _ in invalid.value.field_violations} == {"name", "description", "category", "visibility"}
    for bad_name in ("", "   ", "tab\there", "nul\x00"):
        with pytest.raises(ValidationError):
            check_new(bad_name, "", "", "")
    assert check_new("ok", "line one\nline two\ttabbed", "", "").description == "line one\nline two\ttabbed"


def test_changes_keep_empty_fields() -> None:
    changes = check_changes("", "", "SCREENING", "")
    assert (changes.name, changes.description, changes.category, changes.visibility) == (
        None, None, "SCREENING", None,
    )
    with pytest.raises(ValidationError):
        check_changes("", "", "", "EVERYONE")


def test_grants_are_viewer_or_editor_for_someone_else_and_none_revokes() -> None:
    user = str(uuid.uuid4())
    assert check_grant(library(), user.upper(), Level.EDITOR) == user  # canonical form
    assert check_grant(library(), user, Level.NONE) == user
    with pytest.raises(ValidationError):
        check_grant(library(), user, Level.OWNER)
    with pytest.raises(ValidationError):
        check_grant(library(), OWNER, Level.VIEWER)
    with pytest.raises(ValidationError):
        check_grant(library(), "not-a-user", Level.VIEWER)


def test_batches_are_deduplicated_bounded_and_bad_ids_named() -> None:
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    ids, malformed = check_batch([a, b.upper(), a, "junk"])
    assert ids == [a, b] and malformed == ["junk"]
    with pytest.raises(ValidationError):
        check_batch([])
    assert len(check_batch([str(uuid.uuid4()) for _ in range(MAX_BATCH)])[0]) == MAX_BATCH
    with pytest.raises(ValidationError) as too_many:
        check_batch([a] * (MAX_BATCH + 1))
    assert "10,000" in too_many.value.message
    bad = [f"bad-{i}" for i in range(25)]
    error = molecules_not_found(bad)
    assert error.message.startswith("25 molecule(s) not found: bad-0, bad-1")
    assert error.message.endswith("bad-9 and 15 more")
    assert error.metadata["molecule_ids"].split(",") == bad[:10]


def test_bins_and_plot_sizes_have_defaults_and_bounds() -> None:
    assert check_bins(0) == 20 and check_bins(200) == 200
    for bins in (-1, 201):
        with pytest.raises(ValidationError):
            check_bins(bins)
    assert check_plot_size(0, 0) == (640, 400)
    with pytest.raises(ValidationError) as invalid:
        check_plot_size(50, 5000)
    assert {f for f, _ in invalid.value.field_violations} == {"width", "height"}


def test_histogram_matches_numpy_and_handles_no_values() -> None:
    values = np.random.default_rng(7).normal(350, 80, 1000)
    hist = distributions.histogram(values, bins=25, missing=4, name="molecular_weight", units="g/mol")
    counts, edges = np.histogram(values, bins=25)
    assert hist.counts == counts.tolist() and hist.edges == pytest.approx(edges.tolist())
    assert (hist.with_value, hist.missing) == (1000, 4)
    assert hist.mean == pytest.approx(values.mean()) and hist.median == pytest.approx(np.median(values))
    empty = distributions.histogram([], bins=20, missing=3, name="ic50", units="nM")
    assert (empty.edges, empty.counts, empty.with_value, empty.missing, empty.mean) == ([], [], 0, 3, 0.0)


def test_plot_is_a_png_of_the_asked_size_even_for_awkward_titles() -> None:
    hist = distributions.histogram([1.0, 2.0, 2.5, 3.0], bins=3, missing=0, name="tpsa", units="Å²")
    png = distributions.render_png(hist, title="Costs $5 and $10 _a_ ^b", width=320, height=240)
    assert png_size(png) == (320, 240)
    empty = distributions.histogram([], bins=3, missing=2, name="tpsa", units="Å²")
    assert png_size(distributions.render_png(empty, title="x", width=100, height=100)) == (100, 100)
    assert distributions.axis_label("tpsa", "Å²") == "tpsa (Å²)" and distributions.axis_label("logp", "") == "logp"
