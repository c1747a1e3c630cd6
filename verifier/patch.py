"""Patch inputs -> :class:`~verifier.model.PatchSeries`.

An input is one of (detected by content, never by file name):

- a plain unified diff (``git diff``, ``diff -u``, ``git show`` output);
- a ``git format-patch`` mail (one message, with or without the ``From <sha>`` line);
- an mbox holding a series: every message with a diff is a patch; cover letters and
  replies are skipped; members numbered ``[PATCH n/N]`` are put in that order;
- a saved patchwork patch page (title, "Message ID", "Commit Message", review
  "Comments", then "Patch" / "diff mbox" and the diff): only that last diff is taken,
  never the quoted diffs in comments;
- ``git:REV``: a commit of the tree's repository, through ``git format-patch -1``.

The diff of every patch is cut out of its message file section by file section
(extended git headers, ``---``/``+++``, hunks counted by their ``@@`` line counts), so
a mail signature or any text after the last hunk is dropped, and it always ends with a
newline: it is what ``git apply`` is given. Structure (hunks, line numbers, file
changes) comes from ``unidiff``. Bad input raises :class:`VerifyError` with one line
that names the input.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import re
import stat
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage, Message
from pathlib import Path

from unidiff import PatchSet
from unidiff.errors import UnidiffParseError

from verifier.model import FileChange, Patch, PatchMeta, PatchSeries, VerifyError

__all__ = [
    "DiffHunk",
    "diff_files",
    "hunk_functions",
    "load_series",
    "parse_hunks",
    "parse_subject",
    "parse_trailers",
]

# --------------------------------------------------------------------------- hunks


@dataclass(frozen=True)
class DiffHunk:
    """One hunk of a diff, numbered as ``git apply`` numbers it (1-based within a file)."""

    file: str  # path the hunk applies to (new path; old path for a deleted file)
    old_file: str | None  # path before the change (None for a new file)
    index: int
    header: str  # "@@ -1067,8 +1067,48 @@ int arch_set_info_guest("
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    function: str | None  # name in the header's function context, if it is a function
    lines: tuple[tuple[str, str], ...]  # ("+" | "-" | " ", text without prefix/newline)


_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_C_KEYWORDS = frozenset(
    "if for while switch return sizeof typeof __typeof__ do else case goto "
    "alignof _Alignof offsetof __attribute__ __builtin_expect defined".split()
)
_FUNC_RE = re.compile(r"([A-Za-z_]\w*)\s*\(")


def _function_of(context: str) -> str | None:
    """``static int alloc_l4_table(struct page_in`` -> ``alloc_l4_table``; else None."""
    text = context.strip()
    if not text or text.startswith("#"):
        return None
    for m in _FUNC_RE.finditer(text):
        if m.group(1) not in _C_KEYWORDS:
            return m.group(1)
    return None


def hunk_functions(diff: str) -> tuple[str, ...]:
    """Function names in the hunk headers' context, unique, in order of appearance."""
    names: list[str] = []
    for line in diff.split("\n"):
        m = _HUNK_RE.match(line)
        if m:
            name = _function_of(m.group(5))
            if name and name not in names:
                names.append(name)
    return tuple(names)


def _strip_prefix(name: str | None) -> str | None:
    """``a/xen/mm.c`` -> ``xen/mm.c``; ``/dev/null`` -> None (unidiff's names)."""
    if name is None:
        return None
    name = name.strip()
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = _unquote(name)
    if name == "/dev/null":
        return None
    if re.match(r"^[abciow12]/", name):
        name = name[2:]
    return name


def _patchset(diff: str) -> PatchSet:
    try:
        return PatchSet(diff)
    except UnidiffParseError as e:
        where = _first_bad_hunk(diff)
        raise VerifyError(f"corrupt patch: {where or e}") from None


def parse_hunks(diff: str) -> list[DiffHunk]:
    """Every hunk of ``diff`` with its file, git's hunk number and its lines."""
    hunks: list[DiffHunk] = []
    for pf in _patchset(diff):
        old = _strip_prefix(pf.source_file)
        new = _strip_prefix(pf.target_file)
        file = new or old or pf.path
        for i, h in enumerate(pf, 1):
            section = h.section_header.strip()
            header = (f"@@ -{h.source_start},{h.source_length} "
                      f"+{h.target_start},{h.target_length} @@ {section}").rstrip()
            lines = tuple(
                (ln.line_type or " ", ln.value[:-1] if ln.value.endswith("\n") else ln.value)
                for ln in h
                if ln.line_type in ("+", "-", " ", "")
            )
            hunks.append(DiffHunk(
                file=file, old_file=old, index=i, header=header,
                old_start=h.source_start, old_len=h.source_length,
                new_start=h.target_start, new_len=h.target_length,
                function=_function_of(section), lines=lines,
            ))
    return hunks


_INDEX_RE = re.compile(r"^index ([0-9a-f]+)\.\.([0-9a-f]+)(?: \d+)?$")


def diff_files(diff: str) -> tuple[FileChange, ...]:
    """The files ``diff`` changes, with hunk/line counts and ``index`` blob ids."""
    out: list[FileChange] = []
    for pf in _patchset(diff):
        old_blob = new_blob = None
        for info in pf.patch_info or ():
            m = _INDEX_RE.match(info.rstrip("\n"))
            if m:
                old_blob, new_blob = m.group(1), m.group(2)
        old = _strip_prefix(pf.source_file)
        new = _strip_prefix(pf.target_file)
        if old_blob is not None and set(old_blob) == {"0"}:
            old_blob = None
        if new_blob is not None and set(new_blob) == {"0"}:
            new_blob = None
        out.append(FileChange(
            old_path=old, new_path=new, old_blob=old_blob, new_blob=new_blob,
            hunks=len(pf), added=pf.added, removed=pf.removed,
        ))
    return tuple(out)


_SPECIAL_MODE_RE = re.compile(
    r"^(?:new file mode|new mode|index \S+) (120000|160000)$", re.M)
_MODE_NAMES = {"120000": "a symlink", "160000": "a submodule link"}


def special_files(diff: str) -> list[tuple[str, str]]:
    """(path, "a symlink" | "a submodule link") for each such file ``diff`` creates.

    ``git apply`` would create them; the tree's readers must never follow what a patch
    creates (a link to /dev/zero, to the reviewer's home), so apply refuses them.
    """
    out: list[tuple[str, str]] = []
    current = "?"
    for line in diff.split("\n"):
        if line.startswith("diff --git "):
            paths = _git_header_paths(line)
            current = _display_name(paths[-1]) if paths else "?"
        elif line.startswith(("new file mode ", "new mode ", "index ")):
            m = _SPECIAL_MODE_RE.match(line)
            if m and (current, _MODE_NAMES[m.group(1)]) not in out:
                out.append((current, _MODE_NAMES[m.group(1)]))
    return out


# --------------------------------------------------------------------------- diff text

_EXT_HEADER_RE = re.compile(
    r"^(?:old mode|new mode|deleted file mode|new file mode|copy from|copy to|rename from|"
    r"rename to|similarity index|dissimilarity index|index) "
)
_GIT_HEADER_RE = re.compile(r'^diff --git ("?[^"]*"?|\S+) ("?.*"?)$')


def _unquote(name: str) -> str:
    """Git's C-style quoted path (``"a/sp ace\\303\\251"``) -> text."""
    body = name[1:-1]
    raw = bytearray()
    i = 0
    simple = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "a": "\a", "b": "\b",
              "f": "\f", "r": "\r", "v": "\v"}
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in simple:
                raw += simple[nxt].encode()
                i += 2
                continue
            if re.match(r"[0-7]{3}", body[i + 1:i + 4]):
                raw.append(int(body[i + 1:i + 4], 8))
                i += 4
                continue
        raw += c.encode()
        i += 1
    return raw.decode("utf-8", "replace")


def _check_path(name: str, what: str) -> None:
    """Refuse names that would write outside the tree."""
    name = name.split("\t", 1)[0].strip()
    if len(name) >= 2 and name[0] == '"' and name[-1] == '"':
        name = _unquote(name)
    if name == "/dev/null" or not name:
        return
    if what in ("---", "+++", "diff --git") and re.match(r"^[abciow12]/", name):
        name = name[2:]
    if name.startswith("/") or ".." in name.split("/"):
        raise VerifyError(f"path escapes the tree: {name!r} in a {what!r} line")
    if _CONTROL_RE.search(name):  # no tree has them; a terminal would obey them
        raise VerifyError(f"file name with control characters: '{printable(name)}' in a "
                          f"{what!r} line")


def _git_header_paths(line: str) -> list[str]:
    m = re.match(r'^diff --git (".*?(?<!\\)"|\S+) (".*"|\S+)$', line)
    if m:
        return [m.group(1), m.group(2)]
    rest = line[len("diff --git "):]
    # Unquoted names with spaces: "a/x y b/x y" -> split in the middle at " b/".
    half = rest.find(" b/")
    if half > 0:
        return [rest[:half], rest[half + 1:]]
    return rest.split()


def _display_name(name: str) -> str:
    return _strip_prefix(name.split("\t", 1)[0]) or name


def _split_lines(text: str) -> list[str]:
    """Lines with their "\n" (the last one may lack it)."""
    lines = [ln + "\n" for ln in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


class _Scanner:
    """Cut the file sections of a diff out of surrounding text (mail, page, signature)."""

    def __init__(self, text: str) -> None:
        # Lines end at "\n" only: C sources may hold form feeds, which
        # str.splitlines() would take for line ends.
        self.lines = _split_lines(text)

    def _is_file_start(self, i: int) -> bool:
        ln = self.lines
        if ln[i].startswith("diff --git "):
            return True
        return (
            i + 2 < len(ln) and ln[i].startswith("--- ")
            and ln[i + 1].startswith("+++ ") and ln[i + 2].startswith("@@ -")
        )

    def find_start(self) -> int | None:
        for i in range(len(self.lines)):
            if self._is_file_start(i):
                return i
        return None

    def extract(self) -> tuple[str, str, str] | None:
        """-> (text before the diff, the diff, text after it), or None without a diff."""
        for line in self.lines:
            # Also outside "diff --git" sections: "diff -ru" prints these on their own.
            b = re.match(r"^Binary files (?:.+ and )?(.+?) differ$", line.rstrip("\n"))
            if b:
                raise VerifyError(f"binary change to {_display_name(b.group(1))}: "
                                  "xen-verify cannot verify binary changes")
        start = self.find_start()
        if start is None:
            return None
        out: list[str] = []
        i = start
        end = start
        while i < len(self.lines):
            if not self._is_file_start(i):
                # Text between or after file sections: a signature, "Only in ...",
                # "diff -u" command lines. Skip to the next section if there is one.
                nxt = next((j for j in range(i, len(self.lines)) if self._is_file_start(j)),
                           None)
                if nxt is None:
                    break
                i = nxt
            i = self._section(i, out)
            end = i
        return "".join(self.lines[:start]), "".join(out), "".join(self.lines[end:])

    def _section(self, i: int, out: list[str]) -> int:
        ln = self.lines
        name = "?"
        if ln[i].startswith("diff --git "):
            paths = _git_header_paths(ln[i].rstrip("\n"))
            for p in paths:
                _check_path(p, "diff --git")
            name = _display_name(paths[-1]) if paths else "?"
            out.append(ln[i])
            i += 1
            while i < len(ln) and _EXT_HEADER_RE.match(ln[i]):
                key = ln[i].split(" ", 2)
                if key[0] in ("rename", "copy") and len(key) == 3:
                    _check_path(key[2].rstrip("\n"), f"{key[0]} {key[1]}")
                out.append(ln[i])
                i += 1
            if i < len(ln) and (ln[i].startswith("GIT binary patch")
                                or ln[i].startswith("Binary files ")):
                raise VerifyError(f"binary change to {name}: xen-verify cannot verify "
                                  "binary changes")
            if i + 1 < len(ln) and ln[i].startswith("--- ") and ln[i + 1].startswith("+++ "):
                _check_path(ln[i][4:].rstrip("\n"), "---")
                _check_path(ln[i + 1][4:].rstrip("\n"), "+++")
                out += ln[i:i + 2]
                i += 2
        else:
            old, new = ln[i][4:].rstrip("\n"), ln[i + 1][4:].rstrip("\n")
            _check_path(old, "---")
            _check_path(new, "+++")
            name = _display_name(new if not new.startswith("/dev/null") else old)
            out += ln[i:i + 2]
            i += 2
        number = 0
        while i < len(ln) and ln[i].startswith("@@ "):
            number += 1
            i = self._hunk(i, out, name, number)
        return i

    def _hunk(self, i: int, out: list[str], name: str, number: int) -> int:
        ln = self.lines
        header = ln[i].rstrip("\n")
        m = _HUNK_RE.match(header)
        if not m:
            raise VerifyError(f"corrupt patch: {name} hunk #{number}: bad header {header!r}")
        if any(g and len(g) > 10 for g in m.groups()[:4]) or max(
                int(g) for g in m.groups()[:4] if g) > MAX_LINE_NUMBER:
            raise VerifyError(f"corrupt patch: {name} hunk #{number}: line number out of range "
                              f"in {header[:80]!r}")
        old = int(m.group(2)) if m.group(2) is not None else 1
        new = int(m.group(4)) if m.group(4) is not None else 1
        want_old, want_new = old, new
        out.append(ln[i])
        i += 1
        while old > 0 or new > 0:
            if i >= len(ln):
                raise VerifyError(self._short(name, number, header, want_old, want_new, old,
                                              new, "the input ends"))
            line = ln[i]
            c = line[:1]
            if c in (" ", "\n", "\r"):
                old -= 1
                new -= 1
            elif c == "-":
                old -= 1
            elif c == "+":
                new -= 1
            elif c == "\\":
                pass
            else:
                raise VerifyError(self._short(name, number, header, want_old, want_new, old,
                                              new, f"the line {line.rstrip()[:40]!r}"))
            if old < 0 or new < 0:
                raise VerifyError(f"corrupt patch: {name} hunk #{number} ({header}) has more "
                                  "lines than its header counts")
            out.append(line)
            i += 1
        while i < len(ln) and ln[i].startswith("\\ "):
            out.append(ln[i])
            i += 1
        return i

    @staticmethod
    def _short(name: str, number: int, header: str, want_old: int, want_new: int,
               old: int, new: int, why: str) -> str:
        return (f"truncated or corrupt patch: {name} hunk #{number} ({header}) expects "
                f"{want_old} old/{want_new} new lines, {want_old - old}/{want_new - new} "
                f"found before {why}")


def _first_bad_hunk(diff: str) -> str | None:
    try:
        _Scanner(diff).extract()
    except VerifyError as e:
        return str(e).split(": ", 1)[-1]
    return None


def _split_diff(text: str) -> tuple[str, str, str] | None:
    """(before, diff, after) with the diff ending in a newline; None when there is none."""
    found = _Scanner(text).extract()
    if found is None:
        return None
    before, diff, after = found
    if diff and not diff.endswith("\n"):
        diff += "\n"
    return before, diff, after


# --------------------------------------------------------------------------- subjects


_PREFIX_RE = re.compile(r"^\s*(?:(?:re|aw|fwd?|sv)\s*:\s*)*\[([^\]]*)\]\s*", re.I)
_REPLY_RE = re.compile(r"^\s*(?:re|aw|sv)\s*:", re.I)


def parse_subject(subject: str) -> tuple[str, int | None, int | None, int | None]:
    """``[PATCH v2 3/7] x86: fix`` -> ("x86: fix", 2, 3, 7). Also "Re:", "[Xen-devel]",
    patchwork's "[v2,3/7]" and tags like ``for-4.6``/``RFC``/``RESEND``."""
    text = " ".join(subject.split())
    version = number = total = None
    while True:
        m = _PREFIX_RE.match(text)
        if not m:
            text = re.sub(r"^\s*(?:(?:re|aw|fwd?|sv)\s*:\s*)+", "", text, flags=re.I)
            break
        for tag in re.split(r"[\s,]+", m.group(1)):
            v = re.fullmatch(r"[vV](\d+)", tag)
            if v:
                version = int(v.group(1))
            n = re.fullmatch(r"(\d+)/(\d+)", tag)
            if n:
                number, total = int(n.group(1)), int(n.group(2))
        text = text[m.end():]
    return text.strip(), version, number, total


_TRAILER_RE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*(?: [a-z]+)?):\s+(\S.*)$")
_KNOWN_TRAILERS = re.compile(
    r"^(?:[A-Za-z-]+-by|Fixes|Link|Cc|CC|Closes|Bug|Resolves|base-commit|"
    r"master commit|master date|Release-acked-by|Backport-requested-by|Message-Id|"
    r"Change-Id|Signed-off-by)$"
)


def parse_trailers(message: str) -> tuple[tuple[str, str], ...]:
    """Trailers of the message's last paragraph (``Signed-off-by: ...`` etc.)."""
    paras = [p for p in re.split(r"\n\s*\n", message.strip()) if p.strip()]
    if not paras:
        return ()
    lines = paras[-1].splitlines()
    found: list[tuple[str, str]] = []
    for line in lines:
        m = _TRAILER_RE.match(line.rstrip())
        if m:
            found.append((m.group(1), m.group(2).strip()))
        elif line[:1].isspace() and found:
            key, value = found[-1]
            found[-1] = (key, f"{value} {line.strip()}")
        elif re.match(r"^\[.*\]$", line.strip()) or line.strip().startswith("(cherry picked"):
            continue  # "[jb: adjusted]" notes between tags, "(cherry picked from ...)"
        else:
            return ()
    if not any(_KNOWN_TRAILERS.match(k) for k, _ in found):
        return ()
    return tuple(found)


_BASE_RE = re.compile(r"^base-commit:\s*([0-9a-f]{7,40})\s*$", re.M)


def _iso_date(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).isoformat()
    except (TypeError, ValueError, IndexError):
        return value.strip()


# --------------------------------------------------------------------------- reading


MAX_PATCH_BYTES = 64 << 20  # a patch (or its gunzipped form) larger than this is refused
MAX_LINE_BYTES = 1 << 20  # one line longer than this is not a patch
MAX_SUBJECT_CHARS = 4096  # a subject goes into a commit message on the command line
MAX_LINE_NUMBER = 10**9  # a hunk header's line number beyond any real file


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _read(arg: str) -> bytes:
    """The bytes of the patch file ``arg``: every input check in one place.

    Refused, with one line: what is not a regular file (a FIFO would block, a device
    never ends), more than MAX_PATCH_BYTES (also once gunzipped: a gzip bomb stops at
    the limit), NUL bytes, lines over MAX_LINE_BYTES.
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait for one
        fd = os.open(arg, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise VerifyError(f"{arg}: no such file") from None
    except PermissionError:
        raise VerifyError(f"{arg}: cannot read the file (permission denied)") from None
    except OSError as e:
        raise VerifyError(f"{arg}: cannot read the file ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise VerifyError(f"{arg}: is {_kind_of(st.st_mode)}, not a patch file")
        if st.st_size > MAX_PATCH_BYTES:
            raise VerifyError(f"{arg}: {st.st_size:,} bytes, over the "
                              f"{MAX_PATCH_BYTES >> 20} MB limit for a patch")
        chunks, size = [], 0
        while size <= MAX_PATCH_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        data = b"".join(chunks)
    except OSError as e:
        raise VerifyError(f"{arg}: cannot read the file ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PATCH_BYTES:
        raise VerifyError(f"{arg}: over the {MAX_PATCH_BYTES >> 20} MB limit for a patch")
    if data[:2] == b"\x1f\x8b":  # lore's t.mbox.gz and the like
        data = _gunzip(data, arg)
    if not data.strip():
        raise VerifyError(f"{arg}: empty file, not a patch")
    if b"\0" in data:
        raise VerifyError(f"{arg}: binary data (NUL bytes), not a patch")
    _check_lines(data, arg)
    return data


def _gunzip(data: bytes, arg: str) -> bytes:
    """Decompress every gzip member, stopping at MAX_PATCH_BYTES of output."""
    import zlib

    out: list[bytes] = []
    size = 0
    rest = data
    try:
        while rest:
            d = zlib.decompressobj(wbits=31)
            while True:
                piece = d.decompress(rest, MAX_PATCH_BYTES + 1 - size)
                out.append(piece)
                size += len(piece)
                if size > MAX_PATCH_BYTES:
                    raise VerifyError(f"{arg}: decompresses to over {MAX_PATCH_BYTES >> 20} MB "
                                      "(the limit for a patch)")
                rest = d.unconsumed_tail
                if d.eof or not rest:
                    break
            if not d.eof:
                raise VerifyError(f"{arg}: corrupt gzip file (truncated)")
            rest = d.unused_data
            if rest and rest[:2] != b"\x1f\x8b":
                break  # trailing garbage after the last member, as gzip -d tolerates
    except zlib.error as e:
        raise VerifyError(f"{arg}: corrupt gzip file ({e})") from None
    return b"".join(out)


def _check_lines(data: bytes, arg: str) -> None:
    """Refuse lines over MAX_LINE_BYTES (by "\n", or by "\r" in a CR-only file)."""
    sep = b"\n" if b"\n" in data else b"\r"
    start = 0
    number = 1
    while start < len(data):
        end = data.find(sep, start)
        if end < 0:
            end = len(data)
        if end - start > MAX_LINE_BYTES:
            raise VerifyError(f"{arg}: line {number} is {end - start:,} bytes, over the "
                              f"{MAX_LINE_BYTES >> 20} MB limit for a line")
        start = end + 1
        number += 1


_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with terminal control characters (ESC, BEL, CR, C1 ...) shown as ``\\xNN``.

    Everything a patch says (subject, author, file names) passes through here before it
    can reach a terminal, so a patch cannot retitle a window or clear a screen.
    """
    return _CONTROL_RE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# An mbox "From_" line with its asctime date ("From <sha> Mon Sep 17 00:00:00 2001",
# "From git@z Thu Jan  1 00:00:00 1970"); a body line "From the spec..." is not one.
_MBOX_FROM_RE = re.compile(
    rb"^From \S+ +(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|"
    rb"Nov|Dec) +\d{1,2} \d{1,2}:\d{2}(?::\d{2})?(?: [+-]?\d{4}| [A-Z]{3,5})* \d{4}\r?$", re.M)
_HEADER_LINE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]*:[ \t]")
_MAIL_KEYS = ("from", "subject", "date", "message-id", "to", "cc", "in-reply-to",
              "mime-version", "content-type", "return-path", "received")


def _looks_like_mail(text: str) -> bool:
    lines = text.lstrip("\n").splitlines()
    if lines and _MBOX_FROM_RE.match(lines[0].encode("utf-8", "replace")):
        return True
    keys = []
    for line in lines[:60]:
        if not line.strip():
            break
        if line[:1] in " \t":
            continue  # folded header
        if not _HEADER_LINE_RE.match(line):
            return False
        keys.append(line.split(":", 1)[0].lower())
    return "subject" in keys and any(k in _MAIL_KEYS for k in keys if k != "subject")


def _looks_like_patchwork(text: str) -> bool:
    head = text.splitlines()[:40]
    return (any(re.match(r"^Message ID\s+\S", ln) for ln in head)
            and any(ln.strip() == "Commit Message" for ln in head))


def _decode_text(data: bytes, arg: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VerifyError(f"{arg}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                          f"{e.start}); convert it to UTF-8") from None


# --------------------------------------------------------------------------- mails


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw if isinstance(raw, str) else ""
    charsets = [part.get_content_charset(), "utf-8", "latin-1"]
    for cs in charsets:
        if not cs:
            continue
        try:
            return payload.decode(cs)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


def _mail_body(msg: Message) -> str:
    """The text a patch is in: the text/plain body, then any text attachments."""
    texts = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        if (ctype.startswith("text/") and ctype != "text/html") or ctype in (
                "application/x-patch", "application/octet-stream"):
            texts.append(_part_text(part))
    body = "\n".join(texts)
    return body.replace("\r\n", "\n")


def _header(msg: Message, name: str) -> str | None:
    value = msg.get(name)
    if value is None:
        return None
    return " ".join(str(value).split()) or None


@dataclass
class _Mail:
    subject: str
    author: str | None
    date: str | None
    message_id: str | None
    body: str
    unixfrom: str | None = None


def _parse_mail(data: bytes) -> _Mail:
    # Raw 8-bit headers are read as UTF-8; latin-1 ones are made UTF-8 first.
    end = re.search(rb"\r?\n\r?\n", data)
    head = data[:end.start()] if end else data
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        data = head.decode("latin-1").encode("utf-8") + data[len(head):]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    mid = _header(msg, "Message-ID")
    return _Mail(
        subject=_header(msg, "Subject") or "",
        author=_header(msg, "From"),
        date=_header(msg, "Date"),
        message_id=mid.strip().strip("<>") if mid else None,
        body=_mail_body(msg),
        unixfrom=msg.get_unixfrom(),
    )


def _patch_from_mail(mail: _Mail, source: str, kind: str, name: str) -> Patch | None:
    """A patch from one message; None when it has no diff (cover letter, reply)."""
    body = mail.body
    subject, author, date = mail.subject, mail.author, mail.date
    # In-body headers (git am): "From:", "Date:", "Subject:" lines opening the body.
    lines = body.split("\n")
    k = 0
    while k < len(lines) and re.match(r"^(From|Date|Subject):\s", lines[k]):
        key, value = lines[k].split(":", 1)
        if key == "From":
            author = value.strip()
        elif key == "Date":
            date = value.strip()
        else:
            subject = value.strip()
        k += 1
    if k and k < len(lines) and not lines[k].strip():
        body = "\n".join(lines[k + 1:])
    # The commit message ends at the "---" line that opens the diffstat; the diff is
    # looked for after it, so a diff quoted in the message is not taken (as git am).
    sep = re.search(r"^---[ \t]*$", body, flags=re.M)
    split = _split_diff(body[sep.end():]) if sep else None
    if split is not None:
        assert sep is not None
        message = body[:sep.start()]
        before, diff, after = split
        before = body[:sep.end()] + before
    else:
        split = _split_diff(body)
        if split is None:
            return None
        before, diff, after = split
        message = before
    message = message.strip("\n")
    message = "\n".join(ln.rstrip() for ln in message.splitlines()).strip()
    text, version, number, total = parse_subject(subject)
    base = _BASE_RE.search(after) or _BASE_RE.search(before)
    return _make_patch(
        diff, name,
        subject=text or "(no subject)", source=source, kind=kind, author=author,
        date=_iso_date(date), message_id=mail.message_id, version=version,
        number=number, total=total, trailers=parse_trailers(message),
        base_commit=base.group(1) if base else None, message=message,
    )


def _make_patch(diff: str, name: str, message: str = "", **meta: object) -> Patch:
    files = diff_files(diff)
    if not files:
        raise VerifyError("no diff found, not a patch")
    subject = str(meta.get("subject") or "")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise VerifyError(f"the subject is {len(subject):,} characters, over the "
                          f"{MAX_SUBJECT_CHARS} limit")
    for key in ("subject", "author", "date", "message_id"):
        if isinstance(meta.get(key), str):
            meta[key] = printable(meta[key])  # type: ignore[arg-type]
    if meta.get("trailers"):
        meta["trailers"] = tuple((printable(k), printable(v))
                                 for k, v in meta["trailers"])  # type: ignore[attr-defined]
    return Patch(meta=PatchMeta(**meta), diff=diff, files=files, message=message)  # type: ignore[arg-type]


def _is_cover(mail: _Mail) -> bool:
    return not _REPLY_RE.match(mail.subject) and parse_subject(mail.subject)[2] == 0


def _is_cover_or_reply(mail: _Mail) -> bool:
    return bool(_REPLY_RE.match(mail.subject)) or _is_cover(mail)


def _load_mails(arg: str, data: bytes) -> list[Patch]:
    starts = [m.start() for m in _MBOX_FROM_RE.finditer(data)]
    if starts and not data[:starts[0]].strip():
        # One message per "From_" line; email parses each (its From_ line included).
        raw = [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]
    else:
        raw = [data]
    mails = [_parse_mail(r) for r in raw]
    kind = "mbox" if len(mails) > 1 else "format-patch"
    found: list[tuple[_Mail, Patch]] = []
    for i, mail in enumerate(mails, 1):
        try:
            patch = _patch_from_mail(mail, f"{arg}#{i}" if len(mails) > 1 else arg, kind, arg)
        except VerifyError as e:
            where = f"message {i} ({mail.subject or 'no subject'}): " if len(mails) > 1 else ""
            raise VerifyError(f"{arg}: {where}{e}") from None
        if patch is not None:
            found.append((mail, patch))
    if not found:
        raise VerifyError(f"{arg}: no diff found in {len(mails)} message(s), not a patch")
    # Replies carrying a diff ("something like this?") are not part of the series,
    # unless they are all there is.
    own = [(m, p) for m, p in found if not _is_cover_or_reply(m)] or found
    patches = [p for _, p in own]
    if len(mails) > 1:
        if all(p.meta.number is not None for p in patches):
            patches.sort(key=lambda p: p.meta.number or 0)
        # The cover letter's "base-commit:" is what the first patch was written on.
        cover_base = next((b.group(1) for m in mails if _is_cover(m)
                           for b in [_BASE_RE.search(m.body)] if b), None)
        if cover_base and patches[0].meta.base_commit is None:
            patches[0] = Patch(meta=_replace_meta(patches[0].meta, base_commit=cover_base),
                               diff=patches[0].diff, files=patches[0].files,
                               message=patches[0].message)
        patches = [
            Patch(meta=_replace_meta(p.meta, source=f"{arg}#{n}"), diff=p.diff, files=p.files,
                  message=p.message)
            for n, p in enumerate(patches, 1)
        ]
    return patches


def _replace_meta(meta: PatchMeta, **changes: object) -> PatchMeta:
    return replace(meta, **changes)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- patchwork

_MONTHS = {
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8,
    "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}
_PW_DATE = (
    r"(?:Jan|Feb|March|Mar|April|Apr|May|June|Jun|July|Jul|Aug|Sept|Sep|Oct|Nov|Dec)\.? "
    r"\d{1,2}, \d{4}, (?:\d{1,2}(?::\d{2})? [ap]\.m\.|noon|midnight) [A-Z]{2,5}"
)
_PW_WHO_RE = re.compile(rf"^(?P<who>.+?) (?P<date>{_PW_DATE})(?: \| #(?P<n>\d+))?\s*$")


def _patchwork_date(value: str) -> str:
    """Django's "Jan. 12, 2016, 10:08 a.m. UTC" -> ISO 8601 (as is when unknown)."""
    m = re.match(
        r"^(\w+)\.? (\d{1,2}), (\d{4}), (?:(\d{1,2})(?::(\d{2}))? ([ap])\.m\.|(noon|midnight))"
        r" UTC$", value)
    if not m or m.group(1)[:3].lower() not in _MONTHS:
        return value
    hour = int(m.group(4) or 0)
    minute = int(m.group(5) or 0)
    if m.group(7):
        hour = 12 if m.group(7) == "noon" else 0
    elif m.group(6) == "p" and hour != 12:
        hour += 12
    elif m.group(6) == "a" and hour == 12:
        hour = 0
    try:
        when = datetime(int(m.group(3)), _MONTHS[m.group(1)[:3].lower()], int(m.group(2)),
                        tzinfo=timezone(timedelta(0)))
    except ValueError:
        return value
    return (when + timedelta(hours=hour, minutes=minute)).isoformat()


def _load_patchwork(arg: str, text: str) -> Patch:
    lines = text.replace("\r\n", "\n").split("\n")
    title = next((ln.strip() for ln in lines if ln.strip()), "")
    message_id = None
    for ln in lines[:40]:
        m = re.match(r"^Message ID\s+<?([^<>\s]+)>?\s*$", ln)
        if m:
            message_id = m.group(1)
            break
    idx = {name: [i for i, ln in enumerate(lines) if ln.strip() == name]
           for name in ("Commit Message", "Comments", "Patch", "diff mbox")}
    commit_at = idx["Commit Message"][0]
    comments_at = next((i for i in idx["Comments"] if i > commit_at), None)
    # The diff: after the last "Patch" line followed by "diff mbox" (the page's end).
    patch_at = next((i for i in reversed(idx["Patch"])
                     if i + 1 < len(lines) and lines[i + 1].strip() == "diff mbox"
                     and i > commit_at), None)
    author = date = None
    body_from = commit_at + 1
    while body_from < len(lines) and not lines[body_from].strip():
        body_from += 1
    if body_from < len(lines):
        m = _PW_WHO_RE.match(lines[body_from])
        if m:
            author, date = m.group("who"), _patchwork_date(m.group("date"))
            body_from += 1
    body_end = comments_at if comments_at is not None else (patch_at or len(lines))
    commit_section = "\n".join(lines[body_from:body_end])
    if patch_at is not None:
        split = _split_diff("\n".join(lines[patch_at + 2:]))
    else:
        # No "Patch" section: the diff shown with the commit message (never comments').
        split = _split_diff(commit_section)
    if split is None:
        raise VerifyError(f"{arg}: patchwork page without a diff, not a patch")
    diff = split[1]
    # The message: up to the repeated title, the "---" line or the diff, if shown.
    msg_lines = []
    subject, version, number, total = parse_subject(title)
    for ln in commit_section.split("\n"):
        if ln.strip() in (title, subject) or re.match(r"^---\s*$", ln) or ln.startswith(
                ("diff --git ", "--- a/", "Index: ")):
            break
        msg_lines.append(ln.rstrip())
    message = "\n".join(msg_lines).strip()
    trailers = parse_trailers(message)
    if author and "<" not in author:
        # The page shows a name only; the author's own Signed-off-by has the address.
        for key, value in trailers:
            if key.lower() == "signed-off-by" and value.split(" <")[0] == author:
                author = value
                break
    comments = []
    if comments_at is not None:
        stop = patch_at if patch_at is not None else len(lines)
        for i in range(comments_at + 1, stop):
            m = _PW_WHO_RE.match(lines[i])
            if m and m.group("n"):
                comments.append((m.group("who"), _patchwork_date(m.group("date"))))
    base = _BASE_RE.search(commit_section)
    return _make_patch(
        diff, arg, subject=subject or title, source=arg, kind="patchwork", author=author,
        date=date, message_id=message_id, version=version, number=number, total=total,
        trailers=trailers, base_commit=base.group(1) if base else None,
        comments=tuple(comments), message=message,
    )


# --------------------------------------------------------------------------- plain diffs


def _load_diff(arg: str, text: str) -> Patch:
    split = _split_diff(text)
    if split is None:
        raise VerifyError(f"{arg}: no diff found, not a patch")
    before, diff, _ = split
    subject = author = date = commit = None
    message = ""
    m = re.match(r"^commit ([0-9a-f]{40})\b.*\n((?:[A-Za-z]+:.*\n)*)\n((?:    .*\n|\n)*)",
                 before)
    if m:  # "git show" / "git log -p" output
        commit = m.group(1)
        for hline in m.group(2).splitlines():
            key, _, value = hline.partition(":")
            if key == "Author":
                author = value.strip()
            elif key in ("Date", "AuthorDate"):
                date = value.strip()
        body = "\n".join(ln[4:] for ln in m.group(3).splitlines()).strip()
        subject, _, message = body.partition("\n")
        message = message.strip()
    else:
        pre = [ln.strip() for ln in before.splitlines() if ln.strip()]
        if pre and not pre[0].startswith(("diff ", "Index:", "===")):
            subject = pre[0]
            message = before.strip().partition("\n")[2].strip()
    text_subject, version, number, total = parse_subject(subject or Path(arg).name)
    base = _BASE_RE.search(text)
    return _make_patch(
        diff, arg, subject=text_subject, source=arg, kind="diff", author=author,
        date=_iso_date(date) if date else None, version=version, number=number, total=total,
        trailers=parse_trailers(message), base_commit=base.group(1) if base else None,
        commit=commit, message=message,
    )


# --------------------------------------------------------------------------- git:REV


def _git_dir_of(git_dir: Path, arg: str) -> Path:
    """The repository's git directory (``.git`` of a work tree, or a bare one)."""
    import git  # GitPython

    try:
        with git.Repo(str(git_dir), search_parent_directories=False) as repo:
            return Path(repo.git_dir)
    except (git.exc.NoSuchPathError, git.exc.InvalidGitRepositoryError):
        pass
    # A bare repository without a "config" file is still one for "git --git-dir".
    if (git_dir / "objects").is_dir() and (git_dir / "HEAD").is_file():
        return git_dir
    raise VerifyError(f"{arg}: {git_dir} is not a git repository")


def _load_git(arg: str, git_dir: Path | None) -> Patch:
    rev = arg[len("git:"):]
    if not rev:
        raise VerifyError(f"{arg}: no revision after 'git:'")
    if git_dir is None:
        raise VerifyError(f"{arg}: no git repository to take the commit from (give a git tree)")
    import git  # GitPython

    gd = _git_dir_of(Path(git_dir), arg)
    # Every command names the repository: it is only read, never written.
    g = git.Git()
    base = ["git", f"--git-dir={gd}"]
    try:
        sha = g.execute([*base, "rev-parse", "--verify", "--quiet", "--end-of-options",
                         f"{rev}^{{commit}}"])
    except git.exc.GitCommandError:
        raise VerifyError(f"{arg}: no commit {rev!r} in {git_dir}") from None
    try:
        parents = g.execute([*base, "show", "-s", "--format=%P", sha]).split()
        if len(parents) > 1:
            raise VerifyError(f"{arg}: {sha[:12]} is a merge commit; "
                              "give one of the commits it merges")
        text = g.execute(
            [*base, "-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false",
             "-c", "format.signature=", "format-patch", "-1", "--stdout", "--no-signature",
             "--encoding=UTF-8", sha],
            strip_newline_in_stdout=False,
        )
    except git.exc.GitCommandError as e:
        detail = str(e.stderr or "").strip().splitlines()
        raise VerifyError(f"{arg}: git format-patch failed: "
                          f"{detail[-1] if detail else e}") from None
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
    patch = _patch_from_mail(_parse_mail(data), arg, "git", arg) if data.strip() else None
    if patch is None:
        raise VerifyError(f"{arg}: commit {sha[:12]} changes no file (empty diff)")
    return Patch(meta=_replace_meta(patch.meta, commit=sha), diff=patch.diff,
                 files=patch.files, message=patch.message)


# --------------------------------------------------------------------------- entry point


def _load_one(arg: str, git_dir: Path | None) -> list[Patch]:
    if arg.startswith("git:"):
        return [_load_git(arg, git_dir)]
    data = _read(arg)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Mails may be in another charset: their parts say which (or latin-1 will do).
        if _looks_like_mail(data.decode("latin-1")):
            return _load_mails(arg, data)
        text = _decode_text(data, arg)  # raises: not UTF-8
    if _looks_like_patchwork(text):
        return [_load_patchwork(arg, text)]
    if _looks_like_mail(text):
        return _load_mails(arg, data)
    return [_load_diff(arg, text)]


def load_series(inputs: list[str], git_dir: Path | None = None) -> PatchSeries:
    """Every input's patches, concatenated in the order given.

    ``inputs`` are file paths (any kind above, detected by content) or ``git:REV``
    (a commit of ``git_dir``, the first tree's repository). Raises :class:`VerifyError`
    with one line naming the input when one cannot be used.
    """
    if not inputs:
        raise VerifyError("no patch given")
    patches: list[Patch] = []
    for arg in inputs:
        try:
            patches += _load_one(arg, git_dir)
        except VerifyError as e:
            msg = str(e)
            raise VerifyError(msg if msg.startswith(arg) else f"{arg}: {msg}") from None
    return PatchSeries(patches=tuple(patches))
