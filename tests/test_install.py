"""A regular (non-editable) install: the wheel carries the harness templates and every data
file, and the installed tool builds and runs a harness from outside the source tree.

The wheel is built from a copy of the checkout (so a stale ``build/`` in the checkout
cannot leak in) with the test environment's setuptools and no network, and installed with
``--no-deps`` into a fresh venv of the Python running the tests; that venv finds the
dependencies through a ``.pth`` line naming the test environment's site-packages (a plain
path: the editable install there is not activated, so ``verifier`` can only come from the
wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import PRE_FIX, ROOT, SEED_PATCH
from verifier.model import TreeSource

SKIP_DIRS = {".git", ".venv", "build", "__pycache__", ".pytest_cache", ".ruff_cache",
             ".hypothesis", "report", "harness-out"}


def _run(cmd: list[str | Path], cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, check=False, **kwargs)  # type: ignore[call-overload]


def _package_files() -> set[str]:
    """Every file the installed package must hold: verifier/ as the source tree has it,
    following the link to the top-level harness_templates/."""
    out = set()
    for dirpath, dirnames, files in os.walk(ROOT / "verifier", followlinks=True):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for f in files:
            if not f.endswith((".pyc", ".pyo")):
                out.add((Path(dirpath) / f).relative_to(ROOT).as_posix())
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True,
                    ignore=shutil.ignore_patterns(*SKIP_DIRS, "*.egg-info"))
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "-w", tmp / "dist", src], cwd=tmp)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (whl,) = (tmp / "dist").glob("xen_verify-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel; returns its directory."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    assert proc.returncode == 0, proc.stderr
    python = venv / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                 wheel], cwd=venv.parent)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    purelib = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                   cwd=venv.parent).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib) / "xen_verify_test_deps.pth").write_text("\n".join(deps) + "\n")
    return venv


def test_wheel_carries_templates_and_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    templates = {f"verifier/harness_templates/{p.name}"
                 for p in (ROOT / "harness_templates").iterdir() if p.is_file()}
    assert templates and templates <= names, sorted(templates - names)
    missing = _package_files() - names
    assert not missing, f"not in the wheel: {sorted(missing)}"


def test_installed_package_finds_its_templates_and_builds_a_harness(
        installed: Path, tmp_path: Path) -> None:
    # Our own C fixture (tests/c/good.c), built and driven through the installed package.
    script = f"""
import json, sys
from pathlib import Path
import verifier
from verifier import harness
from verifier.target import open_target
c = Path({str(ROOT / "tests" / "c")!r})
with open_target(None, Path({str(tmp_path / "cache")!r}),
                 pieces=harness.fixture_pieces(c / "good.c"),
                 constants_text=(c / "consts.h").read_text(), label="good", timeout=10) as t:
    t.reset(3)
    filled = [t.fill_ro_mpt(1), t.fill_ro_mpt(1)]
print(json.dumps({{"verifier": verifier.__file__, "templates": str(harness.TEMPLATES),
                   "names": sorted(p.name for p in harness.TEMPLATES.iterdir()),
                   "filled": filled}}))
"""
    (tmp_path / "cache").mkdir()
    proc = _run([installed / "bin" / "python", "-c", script], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(got["verifier"]).is_relative_to(installed), got["verifier"]
    templates = Path(got["templates"])
    assert templates.is_relative_to(installed) and not templates.is_symlink()
    assert got["names"] == sorted(p.name for p in (ROOT / "harness_templates").iterdir())
    assert got["filled"] == [1, 0]


@pytest.mark.debian
def test_installed_cli_checks_debian_tree(installed: Path, debian_bookworm: TreeSource,
                                          test_cache: Path, tmp_path: Path) -> None:
    """The installed ``xen-verify`` runs the README's first check from outside the checkout."""
    out = tmp_path / "out"
    proc = _run([installed / "bin" / "xen-verify", "check", SEED_PATCH, "--debian", "bookworm",
                 "--cache", test_cache, "--report-dir", out, "-q"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    (run,) = report["runs"]
    checks = {c["id"]: c for c in run["checks"]}
    assert checks["P1"]["patched"] == "pass", checks.get("P1")
    assert not [c["id"] for c in run["checks"] if c["patched"] == "error"], run["checks"]


def test_tests_reuse_the_tools_debian_downloads(tmp_path: Path, monkeypatch) -> None:
    """What the tool already downloaded seeds the test cache; the tool's cache is only read."""
    from tests.conftest import _reuse_tool_downloads

    tool = tmp_path / "tool"
    (tool / "debian" / "files").mkdir(parents=True)
    (tool / "debian" / "files" / "xen_1.0.orig.tar.xz").write_bytes(b"orig")
    lists = tool / "apt" / "bookworm" / "lists"
    (lists / "partial").mkdir(parents=True)
    (lists / "x_InRelease").write_text("release")
    before = sorted((p.relative_to(tool).as_posix(), p.stat().st_mtime_ns)
                    for p in tool.rglob("*"))
    monkeypatch.setenv("XEN_VERIFY_CACHE", str(tool))
    tests = tmp_path / "tests"
    tests.mkdir()
    _reuse_tool_downloads(tests)
    assert (tests / "debian" / "files" / "xen_1.0.orig.tar.xz").read_bytes() == b"orig"
    assert (tests / "apt" / "bookworm" / "lists" / "x_InRelease").read_text() == "release"
    # A state the tests already have is left alone, and nothing is written on the tool's side.
    (tests / "apt" / "bookworm" / "lists" / "x_InRelease").write_text("newer")
    _reuse_tool_downloads(tests)
    assert (tests / "apt" / "bookworm" / "lists" / "x_InRelease").read_text() == "newer"
    assert sorted((p.relative_to(tool).as_posix(), p.stat().st_mtime_ns)
                  for p in tool.rglob("*")) == before
    assert not [p for p in tests.rglob(".tmp-*")]


@pytest.mark.upstream
def test_installed_cli_fixes_p1_on_upstream(installed: Path, xen_git: TreeSource, test_cache: Path,
                                            tmp_path: Path) -> None:
    """The seed on the commit before the committed fix, through the installed tool."""
    out = tmp_path / "out"
    proc = _run([installed / "bin" / "xen-verify", "check", SEED_PATCH, "--repo",
                 os.environ["XEN_GIT"], "--ref", PRE_FIX, "--cache", test_cache,
                 "--report-dir", out, "-q"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run,) = json.loads((out / "report.json").read_text())["runs"]
    checks = {c["id"]: c for c in run["checks"]}
    assert (checks["P1"]["base"], checks["P1"]["patched"]) == ("fail", "pass"), checks["P1"]
