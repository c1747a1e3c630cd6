"""`xen-verify plan --gitlab`: the child pipeline validates against GitLab's schema, and
gitlab-ci-local runs it end to end (shell executor, no Docker) to the same report as a
single multi-ref run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import toyrepo
from verifier.cli import main

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
GITLAB_CI_LOCAL = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "gitlab-ci-local"
REFS = ["written-on", "master", "clash", "old"]


def _need(tool: str, path: Path | str | None, why: str) -> str:
    """A tool a test needs: skip without it, except in CI, where .ci/run installs it."""
    if path and Path(path).exists():
        return str(path)
    if os.environ.get("CI"):
        pytest.fail(f"{tool} missing in CI: {why}")
    pytest.skip(f"{tool} not installed: {why}")


def _plan(tmp: Path, *extra: str) -> tuple[Path, Path, str]:
    repo, patch = toyrepo.build(tmp / "src")
    proj = tmp / "proj"
    proj.mkdir()
    shutil.copy(patch, proj / "fill-slot.patch")
    yml = proj / ".gitlab-ci.yml"
    args = ["plan", "fill-slot.patch", "--repo", str(repo)]
    for ref in REFS:
        args += ["--ref", ref]
    rc = main([*args, "--gitlab", str(yml), "--xen-verify", str(VENV_BIN / "xen-verify"),
               *extra])
    assert rc == 0
    return proj, repo, yml.read_text()


def _load_yaml(text: str) -> dict:
    from ruamel.yaml import YAML  # check-jsonschema's YAML reader

    return YAML(typ="safe").load(text)


def test_plan_writes_one_job_per_ref_and_a_merge(tmp_path: Path) -> None:
    _, _, text = _plan(tmp_path, "--artifacts-from", "series")
    pipe = _load_yaml(text)
    checks = [k for k in pipe if k.startswith("check-")]
    assert len(checks) == len(REFS)
    for n, (job, ref) in enumerate(zip(checks, REFS, strict=True), 1):
        script = pipe[job]["script"][0]
        assert f"--ref {ref} " in script and f"--report-dir reports/{n}" in script
        assert pipe[job]["allow_failure"] == {"exit_codes": [1]}
        assert pipe[job]["needs"] == [{"pipeline": "$PARENT_PIPELINE_ID", "job": "series"}]
    merge = pipe["merge"]
    assert [n["job"] for n in merge["needs"]] == checks
    assert merge["when"] == "always"
    assert merge["script"][0].endswith("merge reports/1 reports/2 reports/3 reports/4 "
                                       "--report-dir report")


def test_plan_quotes_refs_for_the_shell(tmp_path: Path) -> None:
    from verifier.gitlab import child_pipeline
    from verifier.pipeline import TreeRequest

    text = child_pipeline(["a b.patch"], [TreeRequest("repo", "/x y", ["v1^", "$(rm -rf)"])])
    jobs = _load_yaml(text)
    scripts = [j["script"][0] for k, j in jobs.items() if k.startswith("check-")]
    assert "'a b.patch'" in scripts[0] and "'/x y'" in scripts[0]
    assert "--ref 'v1^'" in scripts[0] and "--ref '$(rm -rf)'" in scripts[1]


def test_plan_needs_a_repo_and_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "x.patch", "--debian", "bookworm", "--gitlab", "c.yml"]) == 2
    assert "--repo" in capsys.readouterr().err
    assert main(["plan", "-", "--repo", str(tmp_path), "--gitlab", "c.yml"]) == 2
    assert "not -" in capsys.readouterr().err


def test_child_pipeline_validates_against_gitlab_schema(tmp_path: Path) -> None:
    tool = _need("check-jsonschema", VENV_BIN / "check-jsonschema",
                 "pip install check-jsonschema (in the test extras)")
    proj, _, _ = _plan(tmp_path)
    r = subprocess.run([tool, "--builtin-schema", "vendor.gitlab-ci", str(proj / ".gitlab-ci.yml")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # and the schema has teeth: a job that runs "sometimes" is refused
    bad = proj / "bad.yml"
    bad.write_text("stages: [a]\njob:\n  stage: a\n  script: [x]\n  when: sometimes\n")
    r = subprocess.run([tool, "--builtin-schema", "vendor.gitlab-ci", str(bad)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0


def test_gitlab_ci_local_runs_the_child_pipeline(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    gcl = _need("gitlab-ci-local", GITLAB_CI_LOCAL,
                "npm install --prefix .ci/node gitlab-ci-local@4.70.1 (as .ci/run does)")
    _need("rsync", shutil.which("rsync"), "gitlab-ci-local copies the project with rsync")
    proj, repo, _ = _plan(tmp_path)
    for args in (["init", "-q"], ["add", "-A"],
                 ["-c", "user.name=ci", "-c", "user.email=ci@localhost", "commit", "-qm", "ci"]):
        subprocess.run(["git", *args], cwd=proj, check=True, capture_output=True)
    env = {**os.environ, "XEN_VERIFY_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path / "home")}
    # jobs without image: run by the shell executor, on this machine, no Docker
    r = subprocess.run([gcl, "--shell-executor-no-image"], cwd=proj, env=env,
                       capture_output=True, text=True, timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 1 or r.returncode == 0, log
    assert "PASS  merge" in log or "WARN  merge" in log or "FAIL  merge" in log, log
    merged = proj / "report" / "report.json"
    assert merged.exists(), log
    # the same verdicts and runs as one multi-ref run of the same refs
    single = tmp_path / "single"
    args = ["check", str(proj / "fill-slot.patch"), "--repo", str(repo)]
    for ref in REFS:
        args += ["--ref", ref]
    capsys.readouterr()
    rc = main([*args, "--report-dir", str(single), "-q", "--cache", str(tmp_path / "cache2")])
    assert rc == 1, capsys.readouterr().err
    a = json.loads(merged.read_text())
    b = json.loads((single / "report.json").read_text())
    assert a["verdict"] == b["verdict"] == "fail"  # clash: a conflict fails its ref
    assert rc == 1
    assert [(x["ref"], x["verdict"], x["apply"]["status"]) for x in a["runs"]] == \
        [(x["ref"], x["verdict"], x["apply"]["status"]) for x in b["runs"]]
    for x in (*a["runs"], *b["runs"]):  # a commit made at run time: its sha has a date in it
        x["apply"]["patched_commit"] = bool(x["apply"]["patched_commit"])
    assert a["runs"] == b["runs"]
    assert "FAIL  merge" in log  # the merge job carries the verdict: a ref failed
