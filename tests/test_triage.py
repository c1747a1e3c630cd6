"""Backport triage on a made-up repository (tests/toyrepo.py ``build_triage``): one test
per defect class of issue 8 — reverts, history before a 3-way merge, partial and
squashed backports, prerequisites of patches that apply, and false prerequisites."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import toyrepo
from verifier.apply import apply_series, missing_identifiers, series_defines
from verifier.model import ApplyStatus
from verifier.patch import load_series, parse_hunks
from verifier.tree import checkout, open_local


@pytest.fixture(scope="module")
def triage(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("triage")
    repo, shas = toyrepo.build_triage(root)
    return repo, shas, root / "cache"


def _run(triage, ref: str, patch: str = "git:fix"):
    repo, shas, cache = triage
    source = open_local(str(repo), cache)
    rev = patch.replace("git:", "")
    series = load_series([f"git:{shas.get(rev, rev)}"], source.git_dir)
    with checkout(source, ref, cache) as co:
        return apply_series(series, co)


def test_clean_apply_that_calls_a_missing_helper_is_a_missing_prerequisite(triage):
    _, shas, _ = triage
    r = _run(triage, "lacks")
    assert r.status is ApplyStatus.MISSING_PREREQUISITE, r.detail
    (p,) = r.prerequisites
    assert p.symbol == "widget_ready"
    assert p.introduced_by == shas["helper"]
    assert p.introduced_subject == "hv/core: add widget_ready()"
    assert p.used_at and p.used_at[0].startswith("hv/core.c:")
    # applied all the same, committed in the worktree: the BUILD check shows what it lacks
    assert r.applied_anyway and r.patched_commit is not None
    assert [h.status for h in r.hunks] and all(h.status in ("ok", "offset") for h in r.hunks)


def test_without_history_a_missing_name_is_said_and_left_to_the_build(triage):
    """A tree without history (a Debian import) cannot tell a prerequisite from the
    patch's own mistake: the patch applies, the detail names what the tree lacks."""
    from dataclasses import replace

    repo, shas, cache = triage
    source = replace(open_local(str(repo), cache), has_history=False)
    series = load_series([f"git:{shas['fix']}"], source.git_dir)
    with checkout(source, "lacks", cache) as co:
        r = apply_series(series, co)
    assert r.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS), r.detail
    assert "widget_ready, which this tree lacks" in r.detail
    assert r.patched_commit is not None


def test_the_patchs_own_definitions_are_no_prerequisite(triage):
    r = _run(triage, "with-helper")
    assert r.status is ApplyStatus.CLEAN, r.detail
    assert r.prerequisites == ()


def test_marker_decides_before_a_three_way_merge(triage):
    _, shas, _ = triage
    r = _run(triage, "adjusted")
    assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
    (m,) = r.matches
    assert m.how == "backport-marker"
    assert m.commit == shas["adjusted"] and m.upstream_commit == shas["fix"]


def test_partial_backport_names_the_hunks_it_left_out(triage):
    _, shas, _ = triage
    r = _run(triage, "partial")
    assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
    (m,) = r.matches
    assert m.commit == shas["partial"]
    # The macro and the clamp are missing; the check in next_slot() is there.
    assert [h.split(" @@")[0] for h in m.left_out] == ["hv/core.c #1", "hv/core.c #2"]
    assert "partial" in r.detail and "2 of 3 hunks" in r.detail


def test_revert_after_the_backport_means_not_applied(triage):
    _, shas, _ = triage
    r = _run(triage, "reverted")
    assert r.status is ApplyStatus.CLEAN, r.detail
    (m,) = r.reverted
    assert m.commit == shas["picked"] and m.reverted_by == shas["revert"]
    assert shas["picked"][:12] in r.detail and shas["revert"][:12] in r.detail


def test_revert_found_by_patch_id_without_a_message(triage):
    _, shas, _ = triage
    r = _run(triage, "undone")
    assert r.status is ApplyStatus.CLEAN, r.detail
    (m,) = r.reverted
    assert m.commit == shas["picked-undone"] and m.reverted_by == shas["undo"]


def test_picked_again_after_the_revert_is_applied(triage):
    _, shas, _ = triage
    r = _run(triage, "reapplied")
    assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
    assert r.matches[0].commit == shas["reapplied"]
    assert r.reverted == ()


def test_every_marker_of_a_squashed_backport_counts(triage):
    _, shas, _ = triage
    for patch, upstream in (("git:fix", shas["fix"]), ("git:second", shas["second"])):
        r = _run(triage, "squashed", patch)
        assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
        (m,) = r.matches
        assert m.commit == shas["squashed"] and m.upstream_commit == upstream


def test_the_fix_itself_on_the_ref_is_named(triage):
    _, shas, _ = triage
    r = _run(triage, "master")
    assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
    assert r.matches[0].how.endswith("commit") and r.matches[0].commit == shas["fix"]


def test_identifier_only_in_context_is_a_conflict_not_a_prerequisite(triage, tmp_path):
    """The ref lacks a function the hunk's context names: the patch conflicts (exit 1)."""
    repo, _, cache = triage
    p = tmp_path / "ctx.patch"
    p.write_text("--- a/hv/core.c\n+++ b/hv/core.c\n@@ -9,3 +9,4 @@ int first_slot(int idx)\n"
                 "     v = v + 1;\n     frobnicate_legacy(v);\n+    v = v - 1;\n"
                 "     table[idx] = v;\n")
    source = open_local(str(repo), cache)
    with checkout(source, "lacks", cache) as co:
        r = apply_series(load_series([str(p)]), co)
    assert r.status is ApplyStatus.CONFLICT, r.detail


def test_ordinary_identifiers_are_not_missing(tmp_path):
    """Locals, parameters, labels, fields, macros and enum constants the patch defines,
    comments and strings: none of it is looked for in the tree."""
    diff = (
        "--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,22 @@\n #include \"x.h\"\n"
        "+#define NEWMAC(a, b) ((a) + (b))\n"
        "+enum { FIRST_KIND, SECOND_KIND = 4, };\n"
        "+    THIRD_KIND,\n"
        "+struct zapper { int zap_count; };\n"
        "+static bool __initdata opt_zapping;\n"
        "+DEFINE_PER_CPU(unsigned int, zap_depth);\n"
        "+static int zap_all(struct zapper *zp, unsigned int nr_zaps)\n"
        "+{\n"
        "+    unsigned int i, zapped = 0, *cursor = NULL;\n"
        "+    /* walks the glorbnak list */\n"
        "+    for ( i = 0; i < nr_zaps; i++ )\n"
        "+        zapped += NEWMAC(zp->zap_count, FIRST_KIND);\n"
        "+    if ( !cursor )\n"
        "+        goto done;\n"
        "+    printk(\"snarfle %u\\n\", zapped);\n"
        "+ done:\n"
        "+    return opt_zapping ? SECOND_KIND : THIRD_KIND + this_cpu(zap_depth);\n"
        "+}\n"
        "+TABLE_ENTRY(ZAPPER, 3),\n"
        "+int undefined_helper_call(void) { return really_missing_thing() + FEAT_ZAPPER; }\n"
        " int x;\n")
    hunks = parse_hunks(diff)
    (tmp_path / "x.c").write_text(
        "#include \"x.h\"\nint x;\nint printk(const char *f, ...);\n#define this_cpu(v) v\n"
        "#define __initdata\n#define DEFINE_PER_CPU(t, n) t n\n#define TABLE_ENTRY(n, v)\n")
    import subprocess
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    defined = series_defines(hunks)
    missing = missing_identifiers(hunks, tmp_path, {}, defined)
    assert set(missing) == {"really_missing_thing"}, missing
    assert missing["really_missing_thing"] == ["x.c:21"]


def test_non_source_files_give_no_prerequisites(tmp_path: Path):
    diff = ("--- a/docs/notes.md\n+++ b/docs/notes.md\n@@ -1 +1,2 @@\n intro\n"
            "+Mention frobozz_quux here.\n")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/notes.md").write_text("intro\n")
    assert missing_identifiers(parse_hunks(diff), tmp_path, {}) == {}

