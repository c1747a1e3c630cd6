"""Prepared trees and the BUILD check on real Xen trees: Debian bookworm's 4.17 (CI) and
upstream refs of several eras (XEN_GIT). Patches are made at run time from the tree's
own text (a comment, a call to a helper nobody declares, an unused variable)."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

from verifier.build import compile_unit, export_commit, prepare_tree
from verifier.model import Outcome, TreeSource

UNIT = "xen/common/grant_table.c"


def _export(source: TreeSource, ref: str, dest: Path) -> Path:
    from verifier.tree import resolve

    sha, _ = resolve(source, ref)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return export_commit(source.git_dir, sha, dest)


def _patch_file(tmp_path: Path, source: TreeSource, ref: str, rel: str, edit, name: str) -> Path:
    """A diff of ``rel`` as ``edit`` changes it (``edit(lines) -> lines``)."""
    from verifier.tree import _git, resolve

    sha, _ = resolve(source, ref)
    old = _git(source.git_dir, "show", f"{sha}:{rel}", strip_newline_in_stdout=False)
    lines = old.splitlines(keepends=True)
    new = edit(list(lines))
    diff = "".join(difflib.unified_diff(lines, new, f"a/{rel}", f"b/{rel}"))
    p = tmp_path / f"{name}.patch"
    p.write_text(f"From: Test <test@example.org>\nSubject: [PATCH] {name}\n\n---\n{diff}")
    return p


def _after_includes(lines: list[str], text: str) -> list[str]:
    last = max(i for i, ln in enumerate(lines) if ln.startswith("#include"))
    return [*lines[:last + 1], text, *lines[last + 1:]]


def _call_in_first_function(lines: list[str], text: str) -> list[str]:
    for i, ln in enumerate(lines):
        if ln.rstrip("\n") == "{" and i and lines[i - 1].rstrip().endswith(")") \
                and not lines[i - 1].startswith(("#", " ", "\t")):
            return [*lines[:i + 1], text, *lines[i + 1:]]
    raise AssertionError("no function definition found")


def _build(report, ref: str | None = None):
    (run,) = report.runs
    (check,) = [c for c in run.checks if c.id == "BUILD"]
    return run, check


def _verify(patch: Path, source: TreeSource, refs: list[str], cache: Path):
    from verifier.patch import load_series
    from verifier.pipeline import verify

    return verify(load_series([str(patch)]), [(source, refs)], cache, command="test")


# --------------------------------------------------------------------------- Debian (CI)


@pytest.mark.debian
def test_bookworm_prepares_once_and_a_second_tree_restores_it(debian_bookworm, test_cache,
                                                                tmp_path):
    a = prepare_tree(_export(debian_bookworm, "HEAD", tmp_path / "a"), test_cache)
    assert a.ok, a.reason
    assert (tmp_path / "a/xen/arch/x86/include/asm/asm-offsets.h").is_file()
    assert (tmp_path / "a/xen/include/xen/compile.h").is_file()
    assert (tmp_path / "a/xen/include/compat/xen.h").is_file()  # compat headers
    assert not (tmp_path / "a/xen/xen-syms").exists()  # the hypervisor itself is never built
    config = (tmp_path / "a/xen/.config").read_text()
    for sym in ("PV", "HVM", "SHADOW_PAGING"):
        assert f"CONFIG_{sym}=y" in config
    b = prepare_tree(_export(debian_bookworm, "HEAD", tmp_path / "b"), test_cache)
    assert b.ok and b.cached and b.key == a.key and b.cpu_seconds == 0
    cmd = b.unit_command("xen/arch/x86/mm.c")
    assert cmd is not None and "-Werror" in cmd.argv and cmd.cwd == tmp_path / "b/xen"
    assert "arch/x86/mm.c" in cmd.argv
    result = compile_unit(b, UNIT)
    assert result.returncode == 0 and not result.diagnostics, result.output


@pytest.mark.debian
def test_bookworm_build_passes_on_a_harmless_patch(debian_bookworm, test_cache, tmp_path):
    patch = _patch_file(tmp_path, debian_bookworm, "HEAD", UNIT,
                        lambda ls: _after_includes(ls, "/* a harmless comment */\n"), "harmless")
    _run, check = _build(_verify(patch, debian_bookworm, [], test_cache))
    assert (check.base, check.patched, check.change) == (Outcome.PASS, Outcome.PASS, "pass")
    assert f"{UNIT}: compiles" in check.detail


@pytest.mark.debian
def test_bookworm_build_fails_on_an_undeclared_helper_at_its_line(debian_bookworm, test_cache,
                                                                  tmp_path):
    call = "    xen_verify_undeclared_helper();\n"
    patch = _patch_file(tmp_path, debian_bookworm, "HEAD", UNIT,
                        lambda ls: _call_in_first_function(ls, call), "helper")
    line = next(i for i, ln in enumerate(patch.read_text().splitlines())
                if ln == "+" + call.rstrip("\n"))
    hunk = patch.read_text().splitlines()
    start = next(int(m.group(1)) for ln in hunk if (m := re.match(r"@@ -\d+,\d+ \+(\d+)", ln)))
    first_body = next(i for i, ln in enumerate(hunk) if ln.startswith("@@"))
    expect = start + (line - first_body - 1)
    run, check = _build(_verify(patch, debian_bookworm, [], test_cache))
    assert (check.base, check.patched, check.change) == (Outcome.PASS, Outcome.FAIL, "REGRESSION")
    assert f"{UNIT}:{expect}" in check.evidence.locations
    assert "xen_verify_undeclared_helper" in check.detail
    assert str(run.verdict) == "fail"


@pytest.mark.debian
def test_bookworm_build_names_a_new_warning(debian_bookworm, test_cache, tmp_path):
    patch = _patch_file(tmp_path, debian_bookworm, "HEAD", UNIT,
                        lambda ls: _after_includes(ls, "static int xen_verify_unused;\n"), "warn")
    _, check = _build(_verify(patch, debian_bookworm, [], test_cache))
    assert check.patched is Outcome.FAIL
    assert "new warning" in check.detail and "-Werror" in check.detail
    assert any("xen_verify_unused" in t and "unused-variable" in t
               for t in check.evidence.trace)


# --------------------------------------------------------------------------- upstream eras


@pytest.mark.upstream
@pytest.mark.parametrize("ref", ["stable-4.11", "stable-4.14", "stable-4.17", "master"])
def test_upstream_eras_prepare_and_compile_units(xen_git, test_cache, tmp_path, ref):
    tree = prepare_tree(_export(xen_git, ref, tmp_path / "t"), test_cache)
    assert tree.ok, tree.reason
    assert tree.era == ("kbuild" if ref in ("stable-4.17", "master") else "rules.mk")
    for unit in ("xen/arch/x86/mm.c", UNIT):
        result = compile_unit(tree, unit)
        assert not result.errors, result.output
    # shadow's multi.c is built once per guest paging level, in every era.
    assert len(tree.unit_commands("xen/arch/x86/mm/shadow/multi.c")) == 3


@pytest.mark.upstream
def test_upstream_before_411_is_na_with_the_python2_reason(xen_git, test_cache, tmp_path):
    tree = prepare_tree(_export(xen_git, "stable-4.10", tmp_path / "t"), test_cache)
    assert not tree.ok
    # what it means first, the script's own message kept in brackets
    assert tree.reason.startswith("the tree's build scripts (") and "Python 2" in tree.reason
    assert "SyntaxError" in tree.reason


@pytest.mark.upstream
def test_upstream_before_kconfig_is_na_saying_so(xen_git, test_cache, tmp_path):
    tree = prepare_tree(_export(xen_git, "stable-4.6", tmp_path / "t"), test_cache)
    assert not tree.ok and "no Kconfig" in tree.reason


@pytest.mark.upstream
def test_upstream_backport_that_applies_but_lacks_its_helper(xen_git, test_cache, tmp_path):
    """XSA-439's Zen1 DIV fix (b5926c6ecf) calls is_zen1_uarch(), which came in de1d265001:
    on stable-4.17 before that helper's backport (19ee1e1faa) it applies, and does not
    build."""
    from verifier.model import Verdict
    from verifier.patch import load_series
    from verifier.pipeline import verify

    series = load_series(["git:b5926c6ecf"], xen_git.git_dir)
    (run,) = verify(series, [(xen_git, ["19ee1e1faa^"])], test_cache, command="test").runs
    # it applies; the history check names the helper it lacks, and BUILD alone runs on
    # the tree the patch was applied to all the same, as the evidence
    assert str(run.apply.status) == "missing-prerequisite", run.apply.detail
    assert "it applies, but" in run.apply.detail and "de1d265001" in run.apply.detail
    assert run.apply.applied_anyway and run.verdict is Verdict.NOT_APPLICABLE
    (check,) = run.checks
    assert (check.pack, check.id) == ("generic", "BUILD") and run.functions == ()
    # the prerequisite's absence, not a regression: no base compared
    assert (check.base, check.patched, check.change) == (Outcome.NA, Outcome.FAIL, "fail")
    assert check.detail.startswith("applied all the same on a ref that lacks a prerequisite")
    assert "is_zen1_uarch" in check.detail
    assert any(loc.startswith("xen/arch/x86/spec_ctrl.c:") for loc in check.evidence.locations)
