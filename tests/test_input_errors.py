"""Each internal error of the hostile-input survey is now one line and exit 2 (or a report).

Inputs are made at run time from the toy repository's patch (our own text).
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests import toyrepo
from tests.conftest import ROOT
from tests.test_fuzz_inputs import _hash_tree


def _run(*args: str, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "XEN_VERIFY_DEBUG"}
    return subprocess.run([sys.executable, "-m", "verifier", *args], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=120)


@pytest.fixture()
def toy(tmp_path: Path):
    repo, patch = toyrepo.build(tmp_path)
    return repo, patch.read_bytes(), tmp_path / "cache"


def _bomb() -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    return b"".join([*(z.compress(b"\n" * (1 << 20)) for _ in range(1024)), z.flush()])


INPUTS = {
    "8 MB subject": lambda p: p.replace(b"Subject: ", b"Subject: " + b"x" * (8 << 20), 1),
    "CR-only line ends": lambda p: p.replace(b"\n", b"\r"),
    "40-digit hunk line number": lambda p: p.replace(b"@@ -", b"@@ -" + b"9" * 40, 1),
    "1 MB gzip bomb": lambda p: _bomb(),
    "control characters in a file name": lambda p: p.replace(
        b"--- a/hv/mm.c", b'--- "a/hv/mm\\033]0;x.c"', 1),
}


@pytest.mark.parametrize("name", [*INPUTS, "FIFO", "/dev/zero", "/dev/urandom"])
def test_bad_input_is_one_line_exit_2(toy, tmp_path: Path, name: str) -> None:
    repo, patch, cache = toy
    if name in INPUTS:
        path = tmp_path / "in.patch"
        path.write_bytes(INPUTS[name](patch))
        if name == "1 MB gzip bomb":
            assert len(path.read_bytes()) < 2 << 20
    elif name == "FIFO":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    else:
        path = Path(name)
    before = _hash_tree(repo)
    r = _run("check", str(path), "--repo", str(repo), "--no-checks", "--cache", str(cache), "-q")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("xen-verify: error:"), \
        r.stderr
    assert "\x1b" not in r.stderr
    assert _hash_tree(repo) == before


@pytest.mark.parametrize("repo_arg", ["ext::sh -c touch% /tmp/xv-pwn", "ext://host/x",
                                      "fd::3", "~nouser-xv/x"])
def test_bad_repo_spec_is_one_line_exit_2(toy, repo_arg: str) -> None:
    _, _, cache = toy
    r = _run("check", str(ROOT / "patches" / "m2p-strict-v1.patch"), "--repo", repo_arg,
             "--no-checks", "--cache", str(cache), "-q")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert not Path("/tmp/xv-pwn").exists()


def test_cache_that_is_a_file_and_unknown_home(toy, tmp_path: Path) -> None:
    repo, patch, _ = toy
    (tmp_path / "p.patch").write_bytes(patch)
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for cache in (str(afile), "~nouser-xv/cache"):
        r = _run("check", str(tmp_path / "p.patch"), "--repo", str(repo), "--no-checks",
                 "--cache", cache, "-q")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert afile.read_text() == "mine\n"


def test_stdout_on_a_full_device(toy, tmp_path: Path) -> None:
    repo, patch, cache = toy
    (tmp_path / "p.patch").write_bytes(patch)
    with open("/dev/full", "w") as full:
        r = _run("check", str(tmp_path / "p.patch"), "--repo", str(repo), "--no-checks",
                 "--cache", str(cache), "-q", stdout=full)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "No space left on device" in r.stderr


def test_full_disk_under_the_cache(toy, tmp_path: Path) -> None:
    repo, patch, _ = toy
    (tmp_path / "p.patch").write_bytes(patch)
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        fd = os.open(mnt / "fill", os.O_WRONLY | os.O_CREAT)
        try:  # fill it
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        before = _hash_tree(repo)
        r = _run("check", str(tmp_path / "p.patch"), "--repo", str(repo), "--no-checks",
                 "--cache", str(mnt / "cache"), "-q")
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "no space left on device" in r.stderr.lower()
        assert _hash_tree(repo) == before
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_escape_sequences_in_a_subject_are_shown_escaped(toy, tmp_path: Path) -> None:
    repo, patch, cache = toy
    path = tmp_path / "p.patch"
    path.write_bytes(patch.replace(b"Subject: ", b"Subject: \x1b]0;owned\x07\x1b[2J", 1))
    for extra in ([], ["--markdown"]):
        r = _run("check", str(path), "--repo", str(repo), "--ref", "written-on", "--no-checks",
                 "--cache", str(cache), *extra)
        assert r.returncode == 0, r.stderr
        assert "\x1b" not in r.stdout + r.stderr and "\\x1b]0;owned" in r.stdout
