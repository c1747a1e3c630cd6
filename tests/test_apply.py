"""Apply statuses on a fixture repository of made-up C (tests/toyrepo.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests import toyrepo
from verifier.apply import apply_series, lines_present
from verifier.model import ApplyStatus
from verifier.patch import load_series, parse_hunks
from verifier.tree import checkout, open_local


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("toy")
    repo, patch = toyrepo.build(root)
    return repo, patch, root / "cache"


def _apply(toy, ref: str, patch_arg: str | None = None, source=None):
    repo, patch, cache = toy
    source = source or open_local(str(repo), cache)
    series = load_series([patch_arg or str(patch)], source.git_dir)
    with checkout(source, ref, cache) as co:
        result = apply_series(series, co)
        text = (co.path / "hv/mm.c").read_text()
    return result, text


def test_clean_on_the_commit_it_was_written_on(toy):
    result, text = _apply(toy, "written-on")
    assert result.status is ApplyStatus.CLEAN
    assert "return 1;" in text  # the worktree holds the patched tree
    assert result.patched_commit
    assert all(h.status == "ok" and h.offset == 0 for h in result.hunks)
    assert result.written_against and result.base_matches is True


def test_offsets_name_the_hunk_and_the_distance(toy):
    result, _ = _apply(toy, "master")
    assert result.status is ApplyStatus.OFFSETS
    assert [(h.index, h.offset) for h in result.hunks] == [(1, 5)]
    assert "+5" in result.detail
    assert result.base_matches is False


def test_three_way_when_context_changed_nearby(toy):
    result, text = _apply(toy, "near")
    assert result.status is ApplyStatus.THREE_WAY
    assert "/* filled on demand */" in text and "return 1;" in text


def test_conflict_names_file_hunk_and_line(toy):
    result, text = _apply(toy, "clash")
    assert result.status is ApplyStatus.CONFLICT
    failed = [h for h in result.hunks if h.status == "failed"]
    assert [(h.file, h.index) for h in failed] == [("hv/mm.c", 1)]
    assert "hv/mm.c hunk #1" in result.detail and "line 7" in result.detail
    assert "return 1;" not in text  # the worktree was reset, no .rej left behind


def test_already_applied_by_reverse_apply_names_the_commit(toy):
    result, _ = _apply(toy, "applied")
    assert result.status is ApplyStatus.ALREADY_APPLIED
    (m,) = result.matches
    assert m.how.startswith("reverse-apply")
    assert m.subject == toyrepo.SUBJECT


def test_already_applied_by_patch_id_under_another_subject(toy):
    result, _ = _apply(toy, "reworded")
    assert result.status is ApplyStatus.ALREADY_APPLIED, result.detail
    (m,) = result.matches
    assert m.how == "patch-id" and m.subject == "mm: return fill status"


def test_already_applied_backport_by_subject_names_upstream(toy):
    repo = toy[0]
    upstream = toyrepo.git(repo, "rev-parse", "upstream")
    result, _ = _apply(toy, "backport")
    assert result.status is ApplyStatus.ALREADY_APPLIED, result.detail
    (m,) = result.matches
    assert m.how == "subject" and m.upstream_commit == upstream


def test_already_applied_backport_by_marker_for_a_git_commit(toy):
    result, _ = _apply(toy, "backport", patch_arg="git:upstream")
    assert result.status is ApplyStatus.ALREADY_APPLIED, result.detail
    (m,) = result.matches
    assert m.how == "backport-marker"


def test_lines_present_without_history(toy):
    repo, _, cache = toy
    source = replace(open_local(str(repo), cache), has_history=False)
    result, _ = _apply(toy, "backport", source=source)
    assert result.status is ApplyStatus.ALREADY_APPLIED, result.detail
    (m,) = result.matches
    assert m.how == "lines-present" and 0.5 <= m.score < 1
    assert any(loc.startswith("hv/mm.c:") for loc in m.locations)


def test_lines_present_rejects_an_unpatched_tree(toy):
    repo, patch, _ = toy
    hunks = parse_hunks(load_series([str(patch)]).patches[0].diff)
    # "old" predates the change entirely: nothing distinctive of it is there.
    tree = repo.parent / "old-tree"
    tree.mkdir(exist_ok=True)
    (tree / "hv").mkdir(exist_ok=True)
    (tree / "hv/mm.c").write_text(toyrepo.MM_C)
    assert lines_present(hunks, tree, {}) is None


def test_identifier_only_in_context_is_no_prerequisite(toy):
    """"old" lacks frob_widget, which the patch names only in a context line: that is a
    conflict (the hunk cannot apply), not a prerequisite (tests/test_triage.py has those)."""
    result, _ = _apply(toy, "old")
    assert result.status is ApplyStatus.CONFLICT, result.detail
    assert result.prerequisites == ()


def test_series_applies_in_order(toy, tmp_path):
    repo, patch, cache = toy
    # Second patch builds on the first: it changes a line the first one added.
    second = (
        "From: Toy Author <toy@example.org>\nSubject: [PATCH 2/2] hv/mm: return bool\n\n---\n"
        "--- a/hv/mm.c\n+++ b/hv/mm.c\n@@ -16,5 +16,5 @@ int fill_slot(unsigned long addr\n"
        "         return 0;\n     slots[idx] = value;\n     count_fill(idx);\n"
        "-    return 1;\n+    return 2;\n }\n")
    p2 = tmp_path / "2.patch"
    p2.write_text(second)
    source = open_local(str(repo), cache)
    series = load_series([str(patch), str(p2)], source.git_dir)
    with checkout(source, "written-on", cache) as co:
        result = apply_series(series, co)
        text = (co.path / "hv/mm.c").read_text()
    assert result.status is ApplyStatus.CLEAN, result.detail
    assert "return 2;" in text
    assert [s for _, s, _ in result.patches] == ["clean", "clean"]


def test_series_stops_at_the_first_conflict(toy, tmp_path):
    repo, patch, cache = toy
    source = open_local(str(repo), cache)
    series = load_series([str(patch), str(patch)], source.git_dir)
    with checkout(source, "written-on", cache) as co:
        result = apply_series(series, co)
    # The same patch twice: the second finds its change already there.
    assert [s for _, s, _ in result.patches] == ["clean", "already-applied"]
    assert result.status is ApplyStatus.CLEAN


def test_error_when_git_cannot_say_why_it_fails(toy, tmp_path):
    """A failure that is no hunk's (the target is a directory): error, with git's reason."""
    p = tmp_path / "dir.patch"
    p.write_text("--- a/hv\n+++ b/hv\n@@ -1 +1 @@\n-x\n+y\n")
    result, _ = _apply(toy, "master", patch_arg=str(p))
    assert result.status is ApplyStatus.ERROR
    assert "hv" in result.detail and "\n" not in result.detail
    assert result.patched_commit is None


def test_conflict_blames_only_the_hunks_that_fail(toy, tmp_path):
    """A second file that applies cleanly is not reported as failing with the first."""
    _, patch, _ = toy
    both = tmp_path / "both.patch"
    both.write_text(patch.read_text() + (
        "--- a/hv/mm.h\n+++ b/hv/mm.h\n@@ -1,2 +1,3 @@\n void frob_widget(int idx);\n"
        " void count_fill(int idx);\n+int fill_slot(unsigned long addr, unsigned long value);\n"))
    result, _ = _apply(toy, "clash", patch_arg=str(both))
    assert result.status is ApplyStatus.CONFLICT
    status = {(h.file, h.index): h.status for h in result.hunks}
    assert status == {("hv/mm.c", 1): "failed", ("hv/mm.h", 1): "ok"}
    assert "hv/mm.h" not in result.detail
