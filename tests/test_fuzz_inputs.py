"""Fuzz the patch input: over 1,000 malformed inputs, no internal error, no hang, bounded memory.

The inputs are made at run time from the toy repository's patch (our own text): byte
flips, truncations, repeated hunks, CR-only and CRLF line ends, huge hunk line numbers,
control characters and non-UTF-8 bytes in subjects and file names, long lines, gzip
(bombs included), NUL bytes, FIFOs, devices, symlinks. Each runs through the command
line's own ``main`` in this process (``--no-checks``: the harness is fuzzed elsewhere),
with a watchdog; the counts per outcome are printed. The repository is hashed after
every case and must not change.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import resource
import signal
import sys
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

from tests import toyrepo
from verifier import cli

CASES = 1100
CASE_SECONDS = 30  # a case still running after this is a hang


def _hash_tree(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in sorted(files):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode() + b"\0")
            with contextlib.suppress(OSError):
                h.update(p.read_bytes() if not p.is_symlink() else os.readlink(p).encode())
    return h.hexdigest()


def _mutations(patch: bytes, rng: random.Random) -> list[tuple[str, bytes]]:
    lines = patch.split(b"\n")
    hunk_at = next(i for i, ln in enumerate(lines) if ln.startswith(b"@@ "))
    hunk = b"\n".join(lines[hunk_at:-1]) + b"\n"
    head = b"\n".join(lines[:hunk_at]) + b"\n"
    out: list[tuple[str, bytes]] = []

    def flip() -> bytes:
        b = bytearray(patch)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)

    for _ in range(300):
        out.append(("byte flips", flip()))
    for _ in range(150):
        out.append(("truncated", patch[: rng.randrange(len(patch))]))
    for n in (2, 10, 100, 1000, 3000):
        out.append((f"hunk x{n}", head + hunk * n))
    out.append(("hunk x20000", head + hunk * 20000))
    out.append(("CR-only", patch.replace(b"\n", b"\r")))
    out.append(("CRLF", patch.replace(b"\n", b"\r\n")))
    for _ in range(40):
        digits = b"9" * rng.randint(9, 60)
        out.append(("huge line number", patch.replace(b"@@ -", b"@@ -" + digits, 1)))
    for _ in range(60):
        ctrl = bytes(rng.choice([0x1B, 0x07, 0x08, 0x0D, 0x9B, 0x7F]) for _ in range(5))
        out.append(("control chars in subject",
                    patch.replace(b"Subject: ", b"Subject: " + ctrl + b"]0;x" + ctrl, 1)))
    for _ in range(30):
        ctrl = "\\" + format(rng.choice([0o33, 0o7, 0o10, 0o15, 0o177]), "03o")
        quoted = f'"a/hv/mm{ctrl}]0;x.c"'.encode()
        out.append(("control chars in file name",
                    patch.replace(b"a/hv/mm.c", quoted, 1).replace(b"--- a/hv/mm.c",
                                                                  b"--- " + quoted)))
    for _ in range(60):
        bad = bytes([rng.randrange(0x80, 0x100)])
        out.append(("non-UTF-8 file name", patch.replace(b"hv/mm.c", b"hv/mm" + bad + b".c")))
    for size in (1 << 16, 1 << 20, 2 << 20, 8 << 20):
        out.append((f"long subject {size >> 10} KB",
                    patch.replace(b"Subject: ", b"Subject: " + b"x" * size, 1)))
        out.append((f"long diff line {size >> 10} KB",
                    patch.replace(b"+", b"+" + b"y" * size, 1)))
    out.append(("gzip", gzip.compress(patch)))
    out.append(("gzip bomb 1 MB", _gzip_bomb()))
    out.append(("gzip truncated", gzip.compress(patch)[:-10]))
    for _ in range(40):
        gz = bytearray(gzip.compress(patch))
        gz[rng.randrange(10, len(gz))] ^= 0xFF
        out.append(("gzip corrupt", bytes(gz)))
    out.append(("NUL bytes", patch.replace(b"\n", b"\n\0", 3)))
    out.append(("empty", b""))
    for _ in range(100):
        out.append(("random bytes", bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))))
    for _ in range(100):  # line-level shuffles keep the shape of a diff
        ls = list(lines)
        i, j = rng.randrange(len(ls)), rng.randrange(len(ls))
        op = rng.choice(["dup", "del", "swap"])
        if op == "dup":
            ls.insert(i, ls[j])
        elif op == "del":
            del ls[i]
        else:
            ls[i], ls[j] = ls[j], ls[i]
        out.append((f"line {op}", b"\n".join(ls)))
    for _ in range(60):
        n = rng.randint(-5, 10**6)
        out.append(("odd hunk counts",
                    patch.replace(b"@@ -", f"@@ -{n},{rng.randint(0, 10**6)} +".encode()
                                  + b"1,", 1)))
    out.append(("symlink-creating patch",
                b"diff --git a/hv/z.h b/hv/z.h\nnew file mode 120000\nindex 0000000..71ef849\n"
                b"--- /dev/null\n+++ b/hv/z.h\n@@ -0,0 +1 @@\n+/dev/zero\n"
                b"\\ No newline at end of file\n"))
    return out


def _gzip_bomb() -> bytes:
    """About 1 MB of gzip that inflates to 1 GB (made in pieces: bounded memory here too)."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b"\n" * (1 << 20)
    return b"".join([*(z.compress(chunk) for _ in range(1024)), z.flush()])


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # type: ignore[no-untyped-def]
    raise _Hang()


def test_fuzz_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, patch_file = toyrepo.build(tmp_path)
    cache = tmp_path / "cache"
    rng = random.Random(12)
    cases = _mutations(patch_file.read_bytes(), rng)
    base = patch_file.read_bytes()
    while len(cases) < CASES:
        b = bytearray(base)
        b[rng.randrange(len(b))] = rng.randrange(256)
        cases.append(("byte flips", bytes(b)))
    files: list[tuple[str, str]] = []
    for i, (kind, data) in enumerate(cases):
        p = tmp_path / f"case-{i}.patch"
        p.write_bytes(data)
        files.append((kind, str(p)))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "zero-link.patch"
    link.symlink_to("/dev/zero")
    files += [("FIFO", str(fifo)), ("/dev/zero", "/dev/zero"), ("/dev/urandom", "/dev/urandom"),
              ("symlink to /dev/zero", str(link)), ("directory", str(tmp_path))]

    repo_hash = _hash_tree(repo)
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        cli.main(["check", str(patch_file), "--repo", str(repo), "--ref", "written-on",
                  "--no-checks", "--cache", str(cache), "-q"])  # warm the cache
    cache_hash = _hash_tree(cache)
    cache_changed: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    by_kind: dict[str, Counter[str]] = {}
    problems: list[str] = []
    old = signal.signal(signal.SIGALRM, _alarm)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    try:
        for kind, path in files:
            err, out = io.StringIO(), io.StringIO()
            signal.alarm(CASE_SECONDS)
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                    rc = cli.main(["check", path, "--repo", str(repo), "--ref", "written-on",
                                   "--no-checks", "--cache", str(cache), "-q", "--markdown"])
            except _Hang:
                rc = -1
            finally:
                signal.alarm(0)
            lines = err.getvalue().strip().splitlines()
            outcome = {0: "report (pass/n-a)", 1: "report (fail/error)", 2: "exit 2",
                       3: "INTERNAL ERROR", -1: "HANG"}.get(rc, f"exit {rc}")
            outcomes[outcome] += 1
            by_kind.setdefault(kind, Counter())[outcome] += 1
            if rc in (3, -1) or (rc == 2 and len(lines) != 1):
                problems.append(f"{kind}: {outcome}: {lines[:2]}")
            if "\x1b" in err.getvalue() or "\x1b" in out.getvalue():
                problems.append(f"{kind}: a raw escape reached the terminal")
            if _hash_tree(repo) != repo_hash:
                problems.append(f"{kind}: the repository changed")
                repo_hash = _hash_tree(repo)
            now = _hash_tree(cache)
            if now != cache_hash:
                cache_changed[outcome] += 1
                if rc == 2:  # refused input must not touch the cache
                    problems.append(f"{kind}: exit 2 but the cache changed")
                cache_hash = now
    finally:
        signal.signal(signal.SIGALRM, old)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    leftovers = list((cache / "work").iterdir()) if (cache / "work").exists() else []
    with capsys.disabled():
        print(f"\nfuzz: {len(files)} inputs in {time.monotonic() - t0:.0f}s, "
              f"peak RSS {rss_mb:.0f} MB (from {rss0 / 1024:.0f} MB)")
        for outcome, n in sorted(outcomes.items()):
            print(f"  {outcome}: {n} (cache content changed after {cache_changed[outcome]})")
        for kind, counts in sorted(by_kind.items()):
            print(f"    {kind}: {dict(counts)}")
    assert not problems, "\n".join(problems[:20])
    assert outcomes["INTERNAL ERROR"] == 0 and outcomes["HANG"] == 0
    assert rss_mb < 1024, "memory grew past 1 GB"
    assert leftovers == [], "worktrees left in the cache"
    assert len(files) >= 1000


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "-s"]))
