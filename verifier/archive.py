"""Unpacking tar archives safely on every Python the package supports.

Extraction filters (``filter="data"``) exist only from Python 3.10.12 / 3.11.4; Debian
bookworm's 3.11.2 lacks them, so without them each member is checked by hand.
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterable
from pathlib import Path

from verifier.model import VerifyError


def unsafe_member(m: tarfile.TarInfo) -> str:
    """Why extracting ``m`` could write outside the destination ('' when it cannot)."""
    parts = m.name.split("/")
    if m.name.startswith("/") or ".." in parts:
        return "path leaves the tree"
    if m.issym() or m.islnk():
        base = posixpath.dirname(m.name) if m.issym() else ""
        target = posixpath.normpath(posixpath.join(base, m.linkname))
        if m.linkname.startswith("/") or target == ".." or target.startswith("../"):
            return "link leaves the tree"
    if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        return "not a file, directory or link"
    return ""


def safe_extractall(tar: tarfile.TarFile, dest: Path, *, label: str,
                    members: Iterable[tarfile.TarInfo] | None = None) -> None:
    """Extract ``members`` (default: all) into ``dest``; refuse anything that leaves it."""
    keep = list(tar.getmembers() if members is None else members)
    if hasattr(tarfile, "data_filter"):
        try:
            tar.extractall(dest, members=keep, filter="data")
        except tarfile.FilterError as e:
            raise VerifyError(f"{label}: unsafe member refused: {e}") from None
        return
    for m in keep:
        bad = unsafe_member(m)
        if bad:
            raise VerifyError(f"{label}: unsafe member refused: {m.name} ({bad})")
    tar.extractall(dest, members=keep)


__all__ = ["safe_extractall", "unsafe_member"]
