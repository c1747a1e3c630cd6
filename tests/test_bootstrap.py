"""./bootstrap when system packages are missing: it says exactly what to do, and stops.

Each run uses a copy of the script and a PATH of links to this machine's tools with
``git`` (so a package is missing), ``sudo`` and ``id`` taken away or stood in for: a
non-root user without sudo, and root whose apt fails. Nothing is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT

TOOLS = ("bash", "dirname", "mktemp", "rm", "sha256sum", "cut", "cat", "grep", "tail", "sed",
         "env", "gcc")


def _bootstrap(tmp: Path, uid: int, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a copy of ./bootstrap with PATH holding TOOLS, a fake ``id`` and ``extra``."""
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3: bootstrap's python3 checks would differ")
    checkout = tmp / "checkout"
    checkout.mkdir()
    shutil.copy2(ROOT / "bootstrap", checkout / "bootstrap")
    shutil.copy2(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    scripts = {"id": f"#!/bin/sh\necho {uid}\n", **extra}
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp), "LC_ALL": "C", "TMPDIR": str(tmp)}
    return subprocess.run([str(bin_dir / "bash"), str(checkout / "bootstrap")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_non_root_without_sudo_gets_the_command_to_run(tmp_path: Path) -> None:
    r = _bootstrap(tmp_path, 1000, {"apt-get": "#!/bin/sh\necho apt-get ran >&2\nexit 0\n"})
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    prefix = "bootstrap: run as root: apt-get update && apt-get install -y -q "
    assert line.startswith(prefix), line
    assert "git" in line[len(prefix):].split()
    assert not (tmp_path / "checkout" / ".venv").exists()


def test_failed_apt_step_stops_with_its_error(tmp_path: Path) -> None:
    apt = "#!/bin/sh\necho 'E: The repository is not signed.'\nexit 100\n"
    r = _bootstrap(tmp_path, 0, {"apt-get": apt})
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("bootstrap: installing system packages (") and "git" in lines[0]
    assert lines[1] == "bootstrap: apt-get update failed (exit 100); the end of its output:"
    assert "  E: The repository is not signed." in lines[2:]
    assert not (tmp_path / "checkout" / ".venv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("xen-verify-bootstrap")]


def test_apt_get_missing_names_the_packages(tmp_path: Path) -> None:
    r = _bootstrap(tmp_path, 0, {})
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.splitlines()
    needs, sep, _ = line.partition(" (Debian package names) and apt-get is not here")
    assert sep and needs.startswith("bootstrap: needs ") and "git" in needs.split(), line
