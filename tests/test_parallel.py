"""Refs in parallel (-j): the same report as one at a time, in the order given, each
result as it completes; errors and Ctrl-C as in a serial run, worktrees removed; the
harness cache safe when the same harness is built at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import toyrepo
from tests.conftest import ROOT
from verifier import harness, pipeline
from verifier.model import VerifyError
from verifier.patch import load_series
from verifier.report import report_json
from verifier.tree import open_tree

REFS = ["written-on", "master", "near", "clash", "old", "applied"]


@pytest.fixture()
def toy(tmp_path: Path):
    repo, patch = toyrepo.build(tmp_path)
    cache = tmp_path / "cache"
    source = open_tree(str(repo), cache)
    return source, load_series([str(patch)], source.git_dir), cache


def _left(cache: Path) -> list[str]:
    """What a finished run left under work/, but for this process's scratch of patch-text
    artefacts (removed when the process exits: replay scripts in it stay valid)."""
    return [d.name for d in (cache / "work").iterdir()
            if not d.name.startswith(f"{os.getpid()}-untrusted-")]


def _strip(data: dict) -> dict:
    for r in data["runs"]:  # made at run time: a new commit, a new sha
        r["apply"]["patched_commit"] = bool(r["apply"]["patched_commit"])
    return data


def test_parallel_report_equals_serial_in_the_order_given(toy) -> None:
    source, series, cache = toy
    said: list[str] = []
    serial = pipeline.verify(series, [(source, REFS)], cache, command="c", jobs=1)
    parallel = pipeline.verify(series, [(source, REFS)], cache, command="c", jobs=3,
                               progress=said.append)
    assert [r.ref for r in parallel.runs] == REFS
    assert _strip(report_json(parallel)) == _strip(report_json(serial))
    # every ref's result is said as it completes, with its number and elapsed time
    done = [m for m in said if " in " in m and m.rstrip().endswith(" s")]
    assert len(done) == len(REFS)
    for n, ref in enumerate(REFS, 1):
        assert any(m.startswith(f"[{n}/{len(REFS)} ") and f"] {ref}: " in m for m in done)
    assert all(__import__("re").match(r"\[\d+/\d+ +\d+\.\d+s\] ", m) for m in said)
    assert _left(cache) == []  # every worktree removed


def test_an_error_in_one_ref_is_raised_and_the_others_cleaned_up(toy, monkeypatch) -> None:
    source, series, cache = toy
    real = pipeline.verify_ref

    def failing(series, source, ref, cache, **kw):  # forked children inherit this
        if ref == "near":
            raise VerifyError("near: made-up failure")
        return real(series, source, ref, cache, **kw)

    monkeypatch.setattr(pipeline, "verify_ref", failing)
    with pytest.raises(VerifyError, match="made-up failure"):
        pipeline.verify(series, [(source, REFS)], cache, command="c", jobs=2)
    assert _left(cache) == []


def test_interrupt_stops_every_ref_and_removes_worktrees(toy, monkeypatch) -> None:
    source, series, cache = toy
    from verifier.tree import checkout

    def slow(series, source, ref, cache, **kw):
        with checkout(source, ref, cache):
            if ref == "master":
                time.sleep(1)
                raise KeyboardInterrupt  # as Ctrl-C reaching this ref's process
            time.sleep(60)

    monkeypatch.setattr(pipeline, "verify_ref", slow)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        pipeline.verify(series, [(source, REFS)], cache, command="c", jobs=3)
    assert time.monotonic() - t0 < 30  # the sleeping refs were stopped, not waited for
    assert _left(cache) == []


def test_cli_jobs_option(tmp_path: Path) -> None:
    repo, patch = toyrepo.build(tmp_path)
    env = {**os.environ, "XEN_VERIFY_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "verifier", "check", str(patch), "--repo", str(repo)]
    for ref in REFS[:3]:
        args += ["--ref", ref]
    r = subprocess.run([*args, "-j", "2", "--report-dir", str(tmp_path / "out")], env=env,
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    assert [x["ref"] for x in json.loads((tmp_path / "out" / "report.json").read_text())
            ["runs"]] == REFS[:3]
    assert "[3/3 " in r.stderr and " in " in r.stderr
    bad = subprocess.run([*args, "-j", "0"], env=env, capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "-j 0" in bad.stderr


def test_same_harness_built_at_once_is_built_safely(tmp_path: Path) -> None:
    from verifier import sandbox

    src = harness.HarnessSources(files={"pieces.c": "int piece(void) { return 42; }\n",
                                        "driver.c": "int piece(void);\n"
                                                    "int main(void) { return piece() - 42; }\n",
                                        harness.GUARD_FILE: sandbox.GUARD_C},
                                 label="made-up", pieces={})
    built: list[harness.Built] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            built.append(harness.build(src, tmp_path))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert {b.exe for b in built} == {tmp_path / f"harness-{src.key}" / "driver"}
    assert subprocess.run([str(built[0].exe)]).returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"harness-{src.key}"]  # no leftovers


@pytest.mark.upstream
def test_upstream_refs_one_process_after_another_judge_as_in_parallel(xen_git, tmp_path):
    """-j 1 runs refs one after another in one process, reusing its checkout path: each
    ref must still be judged on its own tree (a stale header index once turned master's
    checks into errors after stable-4.6, with -j 1 only)."""
    seed = load_series([str(ROOT / "patches" / "m2p-strict-v1.patch")], xen_git.git_dir)
    outcomes = {}
    for jobs in (1, 2):
        cache = tmp_path / f"cache-{jobs}"
        source = open_tree(str(xen_git.git_dir), cache)
        report = pipeline.verify(seed, [(source, ["stable-4.6", "master"])], cache,
                                 command="test", jobs=jobs)
        outcomes[jobs] = [(r.ref, str(r.verdict), [(c.id, str(c.base), str(c.patched))
                                                   for c in r.checks]) for r in report.runs]
    assert outcomes[1] == outcomes[2]
    assert all(v == "pass" for _, v, _ in outcomes[1]), outcomes[1]
