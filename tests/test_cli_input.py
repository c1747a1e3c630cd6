"""Input conveniences: `-` reads the patch from standard input; --report-dir is checked
before any work; a series gets a summary per member."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import toyrepo
from tests.conftest import ROOT


def run(*args: str, cache: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "XEN_VERIFY_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "verifier", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300, input=stdin)


def test_patch_from_standard_input(tmp_path: Path) -> None:
    repo, patch = toyrepo.build(tmp_path)
    out = tmp_path / "out"
    r = run("check", "-", "--repo", str(repo), "--ref", "master", "--report-dir", str(out),
            "-q", cache=tmp_path / "cache", stdin=patch.read_text())
    assert r.returncode == 0, r.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["patch"]["source"] == "-" and data["patch"]["subject"] == toyrepo.SUBJECT
    assert data["runs"][0]["apply"]["status"] == "offsets"


def test_empty_standard_input_is_one_line(tmp_path: Path) -> None:
    repo, _ = toyrepo.build(tmp_path)
    r = run("check", "-", "--repo", str(repo), "-q", cache=tmp_path / "cache", stdin="")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("xen-verify: error: -: ")  # named as given, not a temp file


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_report_dir_fails_before_any_work(tmp_path: Path) -> None:
    repo, patch = toyrepo.build(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    r = run("check", str(patch), "--repo", str(repo), "--report-dir", str(locked / "out"),
            cache=tmp_path / "cache")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not writable" in r.stderr


def test_report_dir_under_a_file_fails_before_any_work(tmp_path: Path) -> None:
    repo, patch = toyrepo.build(tmp_path)
    (tmp_path / "f").write_text("x")
    r = run("check", str(patch), "--repo", str(repo), "--report-dir", str(tmp_path / "f" / "out"),
            cache=tmp_path / "cache")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "checking out" not in r.stderr  # no ref was touched
