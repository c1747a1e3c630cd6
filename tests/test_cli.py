"""The command line as a user runs it: exit statuses, one-line errors, nothing of theirs changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import toyrepo
from tests.conftest import ROOT, SEED_PATCH
from tests.test_tree import snapshot


def run(*args: str, cache: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XEN_VERIFY_CACHE": str(cache)}
    env.pop("XEN_VERIFY_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "verifier", *args], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=600)


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path, Path]:
    repo, patch = toyrepo.build(tmp_path)
    return repo, patch, tmp_path / "cache"


def test_check_writes_three_reports_and_exits_by_verdict(toy, tmp_path):
    repo, patch, cache = toy
    out = tmp_path / "out"
    r = run("check", str(patch), "--repo", str(repo), "--ref", "written-on", "--ref", "clash",
            "--report-dir", str(out), "-q", cache=cache)
    assert r.returncode == 1, r.stderr  # the conflict fails the run
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == 2
    assert [run["ref"] for run in report["runs"]] == ["written-on", "clash"]
    assert [run["apply"]["status"] for run in report["runs"]] == ["clean", "conflict"]
    assert [run["verdict"] for run in report["runs"]] == ["not-applicable", "fail"]
    assert report["verdict"] == "fail"
    assert report["patch"]["subject"] == toyrepo.SUBJECT
    assert report["patch"]["message_id"] == "toy-1@example.org"
    assert report["patch"]["version"] == 2
    md = (out / "report.md").read_text()
    assert "clash" in md and "conflict" in md and "hv/mm.c" in md
    assert (out / "junit.xml").read_text().lstrip().startswith("<")


def test_clean_run_exits_zero(toy):
    repo, patch, cache = toy
    r = run("check", str(patch), "--repo", str(repo), "--ref", "master", "-q", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "offsets" in r.stdout


BAD_DIFFS = {
    "not-a-patch.txt": "Just some text.\nNo diff here.\n",
    "binary.patch": ("diff --git a/hv/blob.bin b/hv/blob.bin\nnew file mode 100644\n"
                     "index 0000000..1111111\nGIT binary patch\nliteral 3\nKcmZ?wP5=M^\n\n"),
    "truncated.patch": ("--- a/hv/mm.c\n+++ b/hv/mm.c\n@@ -1,8 +1,9 @@\n #include \"mm.h\"\n"
                        " \n+/* new */\n static unsigned long slots[16];\n"),
    "escape.patch": ("--- a/../outside.c\n+++ b/../outside.c\n@@ -1 +1 @@\n-a\n+b\n"),
}


@pytest.mark.parametrize("name", [*BAD_DIFFS, "missing.patch", "a-directory"])
def test_bad_patch_input_is_one_line_exit_2_and_changes_nothing(toy, tmp_path, name):
    repo, _, cache = toy
    path = tmp_path / name
    if name in BAD_DIFFS:
        path.write_text(BAD_DIFFS[name])
    elif name == "a-directory":
        path.mkdir()
    before_repo = snapshot(repo / ".git")
    r = run("check", str(path), "--repo", str(repo), "--ref", "master", "-q", cache=cache)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xen-verify: error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert str(path.name) in lines[0] or name == "a-directory"
    assert snapshot(repo / ".git") == before_repo
    assert not (cache / "work").exists() or not any((cache / "work").iterdir())


@pytest.mark.parametrize("args, expect", [
    (["--ref", "no-such-ref"], "no-such-ref"),
    (["--ref", "--upload-pack=touch /tmp/x"], "--ref"),
])
def test_unknown_ref_is_exit_2(toy, args, expect):
    repo, patch, cache = toy
    before = snapshot(repo / ".git")
    r = run("check", str(patch), "--repo", str(repo), *args, cache=cache)
    assert r.returncode == 2 and expect in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert snapshot(repo / ".git") == before


def test_unreachable_url_is_exit_2_and_caches_nothing(toy):
    _, patch, cache = toy
    r = run("check", str(patch), "--repo", "http://127.0.0.1:9/xen.git", "-q", cache=cache)
    assert r.returncode == 2 and "cannot clone" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    clones = cache / "clones"
    assert not clones.exists() or not [p for p in clones.iterdir() if p.suffix == ".git"]


def test_usage_errors_are_exit_2(tmp_path):
    seed = str(SEED_PATCH)
    for args in ([], ["check"], ["frobnicate"], ["check", "x.patch", "--bogus"],
                 ["check", seed, "--ref", "master", "--repo", "."],  # a --ref needs its tree
                 ["check", "git:HEAD"]):  # git:REV needs a --repo to name the commit in
        r = run(*args, cache=tmp_path / "cache")
        assert r.returncode == 2, args
        assert len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)


def test_report_dir_that_is_a_file_is_exit_2(toy, tmp_path):
    repo, patch, cache = toy
    f = tmp_path / "file"
    f.write_text("mine\n")
    r = run("check", str(patch), "--repo", str(repo), "--report-dir", str(f), cache=cache)
    assert r.returncode == 2 and f.read_text() == "mine\n"


@pytest.mark.debian
def test_readme_first_command_on_debian_bookworm(debian_bookworm, test_cache, tmp_path):
    """What the README's first command does, on bookworm's Xen: the fix is already there."""
    out = tmp_path / "out"
    r = run("check", str(SEED_PATCH.relative_to(ROOT)), "--debian", "bookworm",
            "--report-dir", str(out), cache=test_cache)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    (only,) = report["runs"]
    assert only["apply"]["status"] == "already-applied"
    (match,) = only["apply"]["matches"]
    assert match["how"] == "lines-present"
    assert any(loc.startswith("xen/arch/x86/domain.c:") for loc in match["locations"])
    assert ["xen/include/asm-x86/mm.h", "xen/arch/x86/include/asm/mm.h"] in \
        only["apply"]["moved_files"]
    _checks_pass_and_have_teeth(only)
    (build,) = [c for c in only["checks"] if c["pack"] == "generic" and c["id"] == "BUILD"]
    assert (build["base"], build["patched"]) == ("n/a", "pass"), build["detail"]


def _checks_pass_and_have_teeth(run: dict) -> None:
    """On a tree that has the fix: P1-P9 pass as it is; with the fixup disabled P1 fails."""
    outcomes = {c["id"]: c["patched"] for c in run["checks"] if c["pack"] == "m2p-strict"}
    assert outcomes == {f"P{i}": "pass" for i in range(1, 10)}, outcomes
    proof = [n for n in run["notes"] if "mutation proof" in n]
    assert proof and "P1 fails" in proof[0] and "NO TEETH" not in proof[0], run["notes"]


@pytest.mark.debian
def test_bullseye_upstream_tarball_only(debian_bullseye, test_cache, tmp_path):
    out = tmp_path / "out"
    r = run("check", str(SEED_PATCH), "--debian", "bullseye", "--report-dir", str(out), "-q",
            cache=test_cache)
    assert r.returncode == 0, r.stderr
    (only,) = json.loads((out / "report.json").read_text())["runs"]
    assert only["apply"]["status"] == "already-applied"
    assert any("Debian patches" in n or "not served" in n for n in only["notes"]), only["notes"]
    _checks_pass_and_have_teeth(only)


UPSTREAM_CLASSES = {
    "be05b5385f^": ("offsets", None),  # written against (nearly) this: hunks moved
    "cf5273420a^": ("offsets", None),  # stable-4.6 just before the backport
    "be05b5385f": ("already-applied", "be05b5385f"),  # the committed v2
    "stable-4.6": ("already-applied", "cf5273420a"),  # the backport, marked master commit
    "stable-4.17": ("already-applied", "be05b5385f"),
    "stable-4.5": ("missing-prerequisite", "d72a4605e1"),  # no m2p_strict at all
}


@pytest.mark.upstream
def test_upstream_tree_classes(xen_git, test_cache, tmp_path):
    out = tmp_path / "out"
    args = ["check", str(SEED_PATCH), "--repo", str(xen_git.git_dir), "--no-checks", "-q",
            "--report-dir", str(out)]
    for ref in UPSTREAM_CLASSES:
        args += ["--ref", ref]
    r = run(*args, cache=test_cache)
    assert r.returncode == 0, r.stderr
    runs = {x["ref"]: x for x in json.loads((out / "report.json").read_text())["runs"]}
    for ref, (status, commit) in UPSTREAM_CLASSES.items():
        got = runs[ref]["apply"]
        assert got["status"] == status, (ref, got["detail"])
        if status == "already-applied":
            assert got["matches"][0]["commit"].startswith(commit), (ref, got["matches"])
        if status == "missing-prerequisite":
            intro = {p["symbol"]: p["introduced_by"] for p in got["prerequisites"]}
            assert "m2p_strict" in intro and intro["m2p_strict"].startswith(commit), intro
    assert runs["stable-4.6"]["apply"]["matches"][0]["upstream_commit"].startswith("be05b5385f")


@pytest.mark.upstream
def test_upstream_committed_fix_as_git_rev(xen_git, test_cache, tmp_path):
    """git:REV: the committed fix applies cleanly on its parent; 4.6 has it as a backport."""
    out = tmp_path / "out"
    r = run("check", "git:be05b5385f", "--repo", str(xen_git.git_dir), "--ref", "be05b5385f^",
            "--ref", "stable-4.6", "--no-checks", "-q", "--report-dir", str(out),
            cache=test_cache)
    assert r.returncode == 0, r.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["patch"]["kind"] == "git"
    parent, stable = report["runs"]
    assert parent["apply"]["status"] == "clean"
    assert stable["apply"]["status"] == "already-applied"
    assert stable["apply"]["matches"][0]["how"] == "backport-marker"
