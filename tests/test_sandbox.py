"""The sandbox around code built from patch text: each hostile behaviour is contained.

Hostile fillers are small C files of our own (``tests/c/hostile_*.c``, not Xen text),
built and run through the same generate -> build -> run path as a tree's harness. Each
case asserts containment (no canary written, no connection received, no process left),
that the failure names what the code tried, and prints how long it took (the issue asks
for seconds; the figure is printed, not asserted).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verifier import harness, sandbox, target
from verifier.target import (
    HarnessCrash,
    HarnessError,
    HarnessFailure,
    HarnessHang,
    SandboxViolation,
    open_target,
)

C = Path(__file__).resolve().parent / "c"
CONSTS = (C / "consts.h").read_text()

pytestmark = pytest.mark.skipif(
    not sandbox.status().available, reason=f"no sandbox here: {sandbox.status().reason}"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sandbox-cache")


def _target(name: str, cache: Path, tmp: Path, timeout: float = 3.0, **subst: str):
    text = (C / f"{name}.c").read_text()
    for key, value in subst.items():
        text = text.replace(f"@{key.upper()}@", value)
    src = tmp / f"{name}.c"
    src.write_text(text)
    return open_target(None, cache, pieces=harness.fixture_pieces(src), constants_text=CONSTS,
                       label=name, timeout=timeout)


def _processes_running(marker: str) -> list[int]:
    """PIDs whose command line or executable mentions ``marker`` (the harness's build dir)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            exe = os.readlink(d / "exe")
        except OSError:
            continue
        if marker in cmd or marker in exe:
            found.append(int(d.name))
    return found


def _run_hostile(name: str, cache: Path, tmp: Path, timeout: float = 3.0,
                 **subst: str) -> tuple[Exception, float]:
    t0 = time.monotonic()
    with _target(name, cache, tmp, timeout=timeout, **subst) as t:
        marker = str(t.built.exe.parent) if t.built is not None else "\0"
        t.reset(3)
        with pytest.raises(HarnessFailure) as info:
            t.fill_ro_mpt(1)
    seconds = time.monotonic() - t0
    print(f"{name}: {type(info.value).__name__}: {info.value} ({seconds:.1f}s)", file=sys.stderr)
    time.sleep(0.2)
    assert _processes_running(marker) == [], "a process outlived the harness"
    return info.value, seconds


@pytest.mark.parametrize(
    ("name", "attempt"),
    [
        ("hostile_write", "write to the file system"),
        ("hostile_system", "run a program with system()"),
        ("hostile_forkbomb", "start a process"),
        ("hostile_killparent", "signal another process"),
    ],
)
def test_hostile_call_is_refused_and_named(name: str, attempt: str, cache: Path,
                                           tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    err, _ = _run_hostile(name, cache, tmp_path, canary=str(canary))
    assert isinstance(err, SandboxViolation) and err.attempt == attempt
    assert f"tried to {attempt}" in str(err) and "blocked" in str(err)
    if name == "hostile_system":  # the command is shown as the code passed it
        assert 'command "' in str(err) and str(canary) in str(err)
    assert not canary.exists()


def test_write_names_the_path(cache: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    err, _ = _run_hostile("hostile_write", cache, tmp_path, canary=str(canary))
    assert str(canary) in str(err)


def test_socket_reaches_no_listener(cache: Path, tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        err, _ = _run_hostile("hostile_socket", cache, tmp_path, port=str(port))
        assert isinstance(err, SandboxViolation) and err.attempt == "open a socket"
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


def test_daemon_does_not_outlive_the_run(cache: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    err, _ = _run_hostile("hostile_daemon", cache, tmp_path, canary=str(canary))
    assert isinstance(err, SandboxViolation) and err.attempt == "start a process"
    time.sleep(3.5)  # the daemon would have written by now
    assert not canary.exists()


@pytest.mark.parametrize("name", ["hostile_alloc", "hostile_mmap"])
def test_20gb_is_stopped_by_the_memory_limit(name: str, cache: Path, tmp_path: Path) -> None:
    err, _ = _run_hostile(name, cache, tmp_path, timeout=10.0)  # the real targets' timeout
    assert isinstance(err, HarnessCrash)
    assert "memory limit" in str(err) or "tried to allocate" in str(err)


def test_spin_spends_a_hang_budget_not_a_timeout_per_scenario(cache: Path,
                                                              tmp_path: Path) -> None:
    t0 = time.monotonic()
    kinds = []
    with _target("spin", cache, tmp_path, timeout=3.0) as t:
        for _ in range(20):  # twenty scenarios, each calling the spinning filler
            try:
                t.reset(2)
                t.fill_ro_mpt(1)
            except HarnessHang:
                kinds.append("hang")
            except HarnessError:
                kinds.append("not run")
    seconds = time.monotonic() - t0
    print(f"spin: {kinds.count('hang')} hangs, {kinds.count('not run')} not run, "
          f"{seconds:.1f}s", file=sys.stderr)
    assert kinds[0] == "hang" and kinds.count("hang") == target.HANG_BUDGET
    assert kinds[-1] == "not run"


@pytest.mark.parametrize("name", ["hostile_include", "hostile_stdin"])
def test_include_of_a_device_is_a_finding_not_a_hang(name: str, cache: Path,
                                                     tmp_path: Path) -> None:
    t0 = time.monotonic()
    with _target(name, cache, tmp_path) as t:
        with pytest.raises(SandboxViolation) as info:
            t.reset(3)
        with pytest.raises(SandboxViolation):
            t.fill_ro_mpt(1)
    assert "#include /dev/" in str(info.value)
    print(f"{name}: {info.value} ({time.monotonic() - t0:.1f}s)", file=sys.stderr)


def test_gcc_reading_a_device_ends_in_the_sandbox(tmp_path: Path) -> None:
    """Without the include check, gcc's limits still end the read of /dev/zero."""
    (tmp_path / "z.c").write_text('#include "/dev/zero"\n')
    res = harness.run_gcc(["gcc", "-c", "z.c"], tmp_path)
    print(f"gcc on /dev/zero: status {res.returncode} in {res.seconds:.1f}s", file=sys.stderr)
    assert res.returncode != 0 and not res.timed_out


def test_the_sandbox_sees_no_home_and_writes_only_scratch(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    secret = Path.home() / ".xv-sandbox-probe"
    secret.write_text("secret")
    try:
        script = (f"cat {secret}; touch /usr/xv-probe; touch {scratch}/ok; "
                  f"cat /proc/net/dev | wc -l; ls /proc | grep -c '^[0-9]'")
        res = sandbox.run(["/bin/sh", "-c", script], cwd=scratch, writable=scratch)
        out = res.stdout.decode()
        assert "secret" not in out
        assert not Path("/usr/xv-probe").exists() and (scratch / "ok").exists()
        lines = out.split()
        assert lines[0] == "3"  # /proc/net/dev: two header lines and lo, nothing else
        assert int(lines[1]) <= 4  # its own PID namespace: bwrap, sh, a pipe's children
    finally:
        secret.unlink()


def test_killing_everything_it_can_see_leaves_the_tool_alive(tmp_path: Path) -> None:
    res = sandbox.run(["/bin/sh", "-c", "kill -9 -1; kill -9 0; echo survived"], cwd=tmp_path)
    assert res.returncode is not None  # we are still here to read it


def test_a_process_left_behind_is_killed_with_the_run(tmp_path: Path) -> None:
    marker = f"xv-orphan-{os.getpid()}"
    res = sandbox.run(["/bin/sh", "-c", f"(setsid sleep 30 {marker} &) ; echo started"],
                      cwd=tmp_path, timeout_s=10)
    assert b"started" in res.stdout
    time.sleep(0.3)
    assert _processes_running(marker) == []


def test_no_sandbox_is_refused_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XEN_VERIFY_NO_BWRAP", "1")
    sandbox.status.cache_clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable):
            sandbox.run(["/bin/true"], cwd=tmp_path)
        sandbox.allow_unsandboxed(True)
        canary = tmp_path / "canary"  # teeth: unconfined, the write happens
        res = sandbox.run(["/bin/sh", "-c", f"touch {canary}"], cwd=tmp_path)
        assert res.returncode == 0 and canary.exists()
    finally:
        sandbox.allow_unsandboxed(False)
        sandbox.status.cache_clear()


def test_cli_refuses_to_run_patch_code_without_a_sandbox(tmp_path: Path) -> None:
    env = {**os.environ, "XEN_VERIFY_NO_BWRAP": "1"}
    patch = Path(__file__).resolve().parent.parent / "patches" / "m2p-strict-v1.patch"
    proc = subprocess.run(
        [sys.executable, "-m", "verifier", "check", str(patch), "--repo", str(tmp_path),
         "--cache", str(tmp_path / "cache"), "-q"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "--no-sandbox" in proc.stderr


def test_the_tools_rss_watchdog_stops_what_asan_does_not(cache: Path, tmp_path: Path,
                                                         monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "WATCHDOG_RSS_BYTES", 200 << 20)  # under ASan's own limit
    err, _ = _run_hostile("hostile_hog", cache, tmp_path, timeout=10.0)
    assert isinstance(err, HarnessCrash) and "watchdog" in str(err), err
