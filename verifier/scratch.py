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

# cache -> (the process that made it and removes it, the directory). A forked ``-j``
# child uses its parent's (named by the parent's pid, so it is reaped by pid as one) and
# leaves its removal to the parent: a report's replay script there stays valid until the
# tool exits, whichever process found the violation.
_DIRS: dict[Path, tuple[int, Path]] = {}
_LOCK = threading.Lock()


def untrusted_cache(cache: Path) -> Path:
    """This run's cache-shaped directory for artefacts of patch text (created once)."""
    key = Path(cache).resolve()
    with _LOCK:
        known = _DIRS.get(key)
        if known is not None and known[1].is_dir():
            return known[1]
        work = key / "work"
        work.mkdir(parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-untrusted-", dir=work))
        _DIRS[key] = (os.getpid(), d)
        return d


def cache_for(cache: Path, *, untrusted: bool) -> Path:
    """``cache`` itself for what trusted inputs made, else this process's scratch."""
    return untrusted_cache(cache) if untrusted else Path(cache)


@atexit.register
def release() -> None:
    """Remove the directories this process made (at exit: a report's replay scripts in
    them stay valid while the tool runs). A forked child's call removes nothing of its
    parent's."""
    with _LOCK:
        mine = [d for pid, d in _DIRS.values() if pid == os.getpid()]
        for k in [k for k, (pid, _) in _DIRS.items() if pid == os.getpid()]:
            del _DIRS[k]
    for d in mine:
        shutil.rmtree(d, ignore_errors=True)


__all__ = ["cache_for", "release", "untrusted_cache"]
