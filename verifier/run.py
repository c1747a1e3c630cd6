"""Run a built harness in the sandbox (``verifier.sandbox``), with time and memory limits.

``HarnessProcess`` speaks the driver's line protocol: one command per line in, one
JSON reply per line out. Every operation has a wall-clock timeout; the child runs in
bubblewrap with the harness seccomp filter, RLIMIT_CPU, RLIMIT_NPROC, RLIMIT_CORE=0 and
ASan's own memory limits (no RLIMIT_AS: ASan reserves a large shadow). A dead child, a
sanitizer report, a refused system call, a finding line on stderr or a timeout becomes
the matching ``HarnessFailure``; the tool itself never crashes on the code under test,
and reads at most ``MAX_REPLY`` bytes of a reply and ``MAX_STDERR`` of its stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import subprocess
import time
from pathlib import Path

from verifier import sandbox
from verifier.patch import printable
from verifier.target import (
    HarnessCrash,
    HarnessError,
    HarnessFailure,
    HarnessHang,
    ListCorruption,
    LockImbalance,
    SandboxViolation,
    UnexpectedCall,
)

CPU_SECONDS = 120
NPROC = 16  # threads included (ASan's RSS watcher is one); new processes are refused anyway
WATCHDOG_PERIOD = 0.5  # seconds between RSS checks while a reply is awaited
MAX_REPLY = 64 << 20  # a reply line longer than this is the harness misbehaving
MAX_STDERR = 256 << 10  # stderr kept for the report; the rest is read and dropped
ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86:handle_abort=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}
_FINDING = re.compile(r"^XV-FINDING ([\w-]+): (.*)$", re.M)
_LOC = re.compile(r"(?<![\w/.-])([\w./-][\w/.-]*\.[ch]):(\d+)")
_HARNESS_FILES = {"driver.c", "pieces.c", "env.h"}


def _limits() -> sandbox.Limits:
    return sandbox.Limits(cpu_s=CPU_SECONDS, mem_bytes=None, nproc=NPROC,
                          fsize_bytes=1 << 20)


class HarnessProcess:
    """One running driver. ``call`` sends a command and returns its JSON reply."""

    def __init__(self, exe: Path, timeout: float = 10.0, *, forks: bool = False,
                 env: dict[str, str] | None = None) -> None:
        # forks: the harness runs each path in a child of its own (generic mode);
        # env: sanitizer options over ENV's
        self.exe = Path(exe)
        self.timeout = timeout
        self.trace: list[str] = []
        exe = self.exe.resolve()
        self.proc = sandbox.popen(
            [str(exe)],
            cwd=exe.parent,
            readable=[exe.parent],
            limits=_limits(),
            env=sandbox.asan_env({**ENV, **(env or {})}),
            seccomp=True,
            processes=forks,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._buf = b""
        self._err = bytearray()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # ------------------------------------------------------------------ protocol

    def call(self, command: str, *, record: bool = True, timeout: float | None = None) -> dict:
        if self.proc.poll() is not None:
            raise HarnessError("the harness process is not running (a failure ended it)")
        if record:
            self.trace.append(command)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._died(command)
        line = self._readline(command, self.timeout if timeout is None else timeout)
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            raise HarnessError(f"harness replied with non-JSON: {line[:200]!r}") from None
        if not reply.get("ok", False):
            raise HarnessError(f"harness refused {command!r}: {reply.get('error')}")
        return reply

    def _readline(self, command: str, timeout: float) -> str:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        fd, efd = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        sel.register(efd, selectors.EVENT_READ)  # drained, so a chatty child never blocks
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    raise HarnessHang(
                        f"no reply to {command!r} within {timeout:g}s",
                        trace=list(self.trace),
                        timeout=timeout,
                        last_op=command,
                        output=_trim(printable(self._err.decode(errors="replace"))),
                    )
                ready = sel.select(min(left, WATCHDOG_PERIOD))
                if not ready and sandbox.tree_rss(self.proc.pid) > sandbox.WATCHDOG_RSS_BYTES:
                    self.kill()  # ASan's own limit did not stop it: the tool's watchdog does
                    raise HarnessCrash(
                        "harness exceeded its memory limit "
                        f"({sandbox.WATCHDOG_RSS_BYTES >> 20} MB, the tool's watchdog): stopped",
                        trace=list(self.trace), output="", signal=None,
                    )
                for key, _ in ready:
                    chunk = os.read(key.fd, 65536)
                    if key.fd == efd:
                        if not chunk:
                            sel.unregister(efd)
                        elif len(self._err) < MAX_STDERR:
                            self._err += chunk[: MAX_STDERR - len(self._err)]
                        continue
                    if not chunk:
                        self._died(command)
                    self._buf += chunk
                    if len(self._buf) > MAX_REPLY:
                        self.kill()
                        raise HarnessCrash(
                            f"harness wrote a reply over {MAX_REPLY >> 20} MB to {command!r}",
                            trace=list(self.trace), output="", signal=None,
                        )
        finally:
            sel.close()
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace")

    def _died(self, command: str) -> None:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.returncode
        assert self.proc.stderr is not None
        err = bytes(self._err)
        with contextlib.suppress(OSError, ValueError):  # what is left, bounded
            os.set_blocking(self.proc.stderr.fileno(), False)
            while len(err) < MAX_STDERR and (chunk := os.read(self.proc.stderr.fileno(), 65536)):
                err += chunk
        # what the code under test printed goes into reports and the terminal: escaped
        text = printable(err[:MAX_STDERR].decode(errors="replace"))
        raise classify(rc, text, list(self.trace), command)

    def kill(self) -> None:
        sandbox.kill(self.proc)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=2)
            except Exception:
                self.kill()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()


_LIMITS = (  # ASan's reports when the sandbox's memory limits stop a harness
    (re.compile(r"hard rss limit exhausted \((\d+)Mb"), "rss"),
    (re.compile(r"requested allocation size (0x[0-9a-f]+)"), "alloc"),
    (re.compile(r"allocator is out of memory|out of memory: allocator"), "oom"),
)


def _limit_message(what: str, m: re.Match[str]) -> str:
    if what == "rss":
        return f"harness exceeded its memory limit ({m.group(1)} MB): stopped"
    if what == "alloc":
        return (f"harness tried to allocate {int(m.group(1), 16):,} bytes (over the "
                f"sandbox's {sandbox.HARNESS_ALLOC_MB} MB per allocation): refused")
    return "harness ran out of memory: stopped"


def _signal_of(rc: int | None) -> int | None:
    """The signal that ended the harness: Popen says -N, bwrap exits 128+N for it."""
    if rc is None:
        return None
    if rc < 0:
        return -rc
    return rc - 128 if 128 < rc < 128 + 65 else None


def _trim(err: str, limit: int = 4000) -> str:
    return err if len(err) <= limit else err[:limit] + "\n[...]"


def classify(rc: int | None, err: str, trace: list[str], command: str) -> HarnessFailure:
    """The HarnessFailure for a child that ended with status ``rc`` and stderr ``err``."""
    loc = None
    for m in _LOC.finditer(err):  # the first tree (or fixture) file:line, not the harness's
        path = m.group(1)
        if Path(path).name not in _HARNESS_FILES and not path.startswith(("../", "/usr/")):
            loc = f"{m.group(1)}:{m.group(2)}"
            break
    f = _FINDING.search(err)
    out = _trim(err)
    if f and f.group(1) == "sandbox":  # the sandbox guard: a refused system call
        what, _, call = f.group(2).partition(" (")
        return SandboxViolation(
            f"harness tried to {what}: blocked by the sandbox ({call.rstrip(')')})",
            trace=trace, location=loc, output=out, attempt=what,
        )
    sig = _signal_of(rc)
    if sig == signal.SIGSYS:
        return SandboxViolation(
            "harness made a system call the sandbox forbids with its signals blocked, as "
            "system() and posix_spawn() do to start a process (killed by SIGSYS): blocked",
            trace=trace, location=loc, output=out, attempt="a forbidden system call",
        )
    if sig == signal.SIGXCPU:
        return HarnessCrash(f"harness used up its CPU-time limit ({CPU_SECONDS} s): stopped",
                            trace=trace, location=loc, output=out, signal=sig)
    for pattern, what in _LIMITS:
        m = pattern.search(err)
        if m:
            return HarnessCrash(_limit_message(what, m), trace=trace, location=loc,
                                output=out, signal=sig)
    if f:
        kind, detail = f.group(1), f.group(2)
        if kind == "unexpected-call":
            name = detail.split(" ", 1)[0]
            return UnexpectedCall(
                f"unexpected call to {name}", trace=trace, location=loc, output=out, name=name
            )
        if kind in ("lock-imbalance", "lock-spin", "map-imbalance"):
            return LockImbalance(f"{kind}: {detail}", trace=trace, location=loc, output=out,
                                 detail=detail)
        if kind == "list-corruption":
            return ListCorruption(detail, trace=trace, location=loc, output=out, detail=detail)
        # assert / bad-map / absent: the code under test went wrong in a way we saw
        return HarnessCrash(f"{kind}: {detail}", trace=trace, location=loc, output=out,
                            signal=None)
    if "AddressSanitizer" in err or "runtime error" in err or rc in (86, 87) or sig:
        first = next(
            (ln.strip() for ln in err.splitlines() if "ERROR:" in ln or "runtime error" in ln),
            f"signal {sig}" if sig else f"exit status {rc}",
        )
        return HarnessCrash(first, trace=trace, location=loc, output=out, signal=sig)
    return HarnessCrash(
        f"harness exited (status {rc}) during {command!r}", trace=trace, location=loc,
        output=out, signal=sig,
    )
