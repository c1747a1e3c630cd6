"""Run a built harness out of the tool's process, with a time limit and resource limits.

``HarnessProcess`` speaks the driver's line protocol: one command per line in, one
JSON reply per line out. Every operation has a wall-clock timeout; the child has
RLIMIT_CPU and RLIMIT_CORE=0 (no RLIMIT_AS: ASan reserves a large shadow). A dead
child, a sanitizer report, a finding line on stderr or a timeout becomes the matching
``HarnessFailure``; the tool itself never crashes on the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import selectors
import signal
import subprocess
import time
from pathlib import Path

from verifier.target import (
    HarnessCrash,
    HarnessError,
    HarnessFailure,
    HarnessHang,
    ListCorruption,
    LockImbalance,
    UnexpectedCall,
)

CPU_SECONDS = 120
ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0:exitcode=86:handle_abort=1",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1:exitcode=87",
}
_FINDING = re.compile(r"^XV-FINDING ([\w-]+): (.*)$", re.M)
_LOC = re.compile(r"(?<![\w/.-])([\w./-][\w/.-]*\.[ch]):(\d+)")
_HARNESS_FILES = {"driver.c", "pieces.c", "env.h"}


def _limits() -> None:  # runs in the child
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS + 5))
    os.setsid()


class HarnessProcess:
    """One running driver. ``call`` sends a command and returns its JSON reply."""

    def __init__(self, exe: Path, timeout: float = 10.0) -> None:
        self.exe = Path(exe)
        self.timeout = timeout
        self.trace: list[str] = []
        env = dict(os.environ)
        env.update(ENV)
        self.proc = subprocess.Popen(
            [str(self.exe)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            preexec_fn=_limits,
        )
        self._buf = b""

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
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
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
                    )
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    self._died(command)
                self._buf += chunk
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
        err = self.proc.stderr.read().decode(errors="replace")
        raise classify(rc, err, list(self.trace), command)

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

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
    sig = -rc if rc is not None and rc < 0 else None
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
