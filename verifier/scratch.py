"""Where what is built from patch text is kept: a directory of this process's own.

The cache keeps only what was made from the trees as they were fetched (a prepared
tree, the base side's lifted units, harnesses and compile results). What a patch's text
went into (the patched side's harness, lifted unit, compile results, a preparation its
Makefiles changed) goes to :func:`untrusted_cache` instead: laid out as the cache, under
the cache's ``work/`` as ``<pid>-untrusted-*`` (so a run killed outright is reaped by the
next, as its worktrees are), and removed when the process ends. A patch posted to a list
leaves nothing on the reviewer's machine, and the cache is byte-identical after any run
on trees it has seen: the property issue 12 asks of every hostile or malformed input.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

_DIRS: dict[tuple[int, Path], Path] = {}
_LOCK = threading.Lock()


def untrusted_cache(cache: Path) -> Path:
    """This process's cache-shaped directory for artefacts of patch text (created once)."""
    key = (os.getpid(), Path(cache).resolve())
    with _LOCK:
        d = _DIRS.get(key)
        if d is not None and d.is_dir():
            return d
        work = key[1] / "work"
        work.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-untrusted-", dir=work))
        _DIRS[key] = d
        return d


def cache_for(cache: Path, *, untrusted: bool) -> Path:
    """``cache`` itself for what trusted inputs made, else this process's scratch."""
    return untrusted_cache(cache) if untrusted else Path(cache)


def forget() -> None:
    """A forked child: the parent's directories are the parent's."""
    with _LOCK:
        _DIRS.clear()


@atexit.register
def release() -> None:
    """Remove this process's directories (at exit; a forked child calls it itself)."""
    with _LOCK:
        mine = [d for (pid, _), d in _DIRS.items() if pid == os.getpid()]
        for k in [k for k in _DIRS if k[0] == os.getpid()]:
            del _DIRS[k]
    for d in mine:
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["cache_for", "forget", "release", "untrusted_cache"]
