"""Results of runs on trusted trees, kept in the cache by content.

A check pack's base side is the same harness (same sources, same key) on the same commit
on every run of every patch to that ref: its results are kept under
``cache/results/<namespace>/<key>.pickle``, the key hashing what the results depend on
(the harness key, the commit, the code that judges). Only trusted inputs go in: a
patched side is never kept (see ``verifier.scratch``), nor a result that could not
judge (a timeout under load is not a property of the tree).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
VERSION = 1  # bump when what is kept changes shape


@functools.lru_cache(maxsize=16)
def code_digest(*roots: str) -> str:
    """Hash of the Python and template files under ``roots`` (files or folders): the code
    whose change must not reuse a result judged by the code before it."""
    h = hashlib.sha256()
    for root in roots:
        base = Path(root)
        files = [base] if base.is_file() else sorted(
            p for p in base.rglob("*") if p.is_file() and p.suffix in (".py", ".j2", ".toml"))
        for p in files:
            h.update(str(p.name).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:24]


def remembered(cache: Path, namespace: str, key_parts: Iterable[str], compute: Callable[[], T],
               keep: Callable[[T], bool]) -> tuple[T, bool]:
    """``compute()``'s result, or the one kept under the same key; (result, was kept)."""
    h = hashlib.sha256(f"v{VERSION}".encode())
    for part in key_parts:
        h.update(b"\0" + part.encode())
    path = Path(cache) / "results" / namespace / (h.hexdigest()[:32] + ".pickle")
    with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError, AttributeError,
                             ImportError, TypeError, ValueError), open(path, "rb") as f:
        return pickle.load(f), True
    value = compute()
    if keep(value):
        with contextlib.suppress(OSError, pickle.PicklingError, TypeError, AttributeError):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    pickle.dump(value, f)
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
    return value, False


__all__ = ["code_digest", "remembered"]
