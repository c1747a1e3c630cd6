"""Concurrent runs on one cache give the verdicts of solo runs, and change nothing of the user's.

Cheap on purpose: the toy repository (our own text), apply only (``--no-checks``), 2
and 4 runs at once on the same ref and on different refs, each starting on a cold cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import toyrepo
from tests.conftest import ROOT
from tests.test_fuzz_inputs import _hash_tree

REFS = ["written-on", "master", "near", "clash", "applied", "old"]


def _start(patch: Path, repo: Path, ref: str, cache: Path, out: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XEN_VERIFY_DEBUG"}
    return subprocess.Popen(
        [sys.executable, "-m", "verifier", "check", str(patch), "--repo", str(repo),
         "--ref", ref, "--no-checks", "--cache", str(cache), "--report-dir", str(out), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT,
    )


def _verdicts(procs: list[tuple[str, subprocess.Popen, Path]]) -> list[tuple[str, int, str, str]]:
    out = []
    for ref, p, rd in procs:
        _, err = p.communicate(timeout=300)
        report = json.loads((rd / "report.json").read_text())
        (run,) = report["runs"]
        out.append((ref, p.returncode, run["apply"]["status"], run["verdict"]))
        assert p.returncode in (0, 1), err.decode()
    return out


@pytest.mark.parametrize("width", [2, 4])
@pytest.mark.parametrize("same_ref", [True, False])
def test_concurrent_runs_match_solo_runs(tmp_path: Path, width: int, same_ref: bool) -> None:
    repo, patch = toyrepo.build(tmp_path)
    refs = [REFS[0]] * width if same_ref else REFS[:width]
    solo = []
    for i, ref in enumerate(dict.fromkeys(refs)):
        rd = tmp_path / f"solo-{i}"
        solo += _verdicts([(ref, _start(patch, repo, ref, tmp_path / f"solo-cache-{i}", rd), rd)])
    expected = {ref: rest for ref, *rest in solo}
    before = _hash_tree(repo)
    cache = tmp_path / "shared-cache"
    procs = []
    for i, ref in enumerate(refs):
        rd = tmp_path / f"conc-{i}"
        procs.append((ref, _start(patch, repo, ref, cache, rd), rd))
    together = _verdicts(procs)
    print(f"\n{width} at once ({'same ref' if same_ref else 'different refs'}): "
          f"{together}", file=sys.stderr)
    assert all(expected[ref] == rest for ref, *rest in together), (together, expected)
    assert _hash_tree(repo) == before
    assert not any((cache / "work").iterdir()) if (cache / "work").exists() else True


def test_a_repeated_run_leaves_the_cache_byte_identical(tmp_path: Path) -> None:
    repo, patch = toyrepo.build(tmp_path)
    cache = tmp_path / "cache"
    _verdicts([("master", _start(patch, repo, "master", cache, tmp_path / "a"), tmp_path / "a")])
    first = _hash_tree(cache)
    _verdicts([("master", _start(patch, repo, "master", cache, tmp_path / "b"), tmp_path / "b")])
    assert _hash_tree(cache) == first  # the patched commit is the same commit: nothing new
