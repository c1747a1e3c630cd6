"""History questions the apply stage asks of a ref's repository (read-only).

- Is the change on the ref: the commit itself, a commit naming it in a backport marker
  (every ``master commit:`` / ``(cherry picked from commit ...)`` line counts, so the
  second fix of a squashed backport is found too), a commit with its patch-id, or one
  with its subject?
- Was that commit reverted later on the ref (a ``This reverts commit`` line naming it or
  its upstream, or a commit whose patch-id is its reverse), and re-applied after that?
- Which commit on the patch's own line introduced an identifier the ref lacks (``git log
  -G`` over the files holding it, net count replayed so that a reverted introduction is
  skipped; a move between files is followed back)?

Answers are cached per process by (repository, question), so a triage of many refs
asks git each question once.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.model import Match
from verifier.tree import GIT_ENV

HISTORY_DEPTH = 3000  # commits per ref searched for an equivalent change
PATCH_ID_DEPTH = 1000  # of those, how many are compared by patch-id
MAX_MOVES = 4  # times an introduction is followed back through a move between files

# Only lines that say where a commit came from: a body line "Commit abc1234 broke ..." names
# the commit a fix is for, not the one it is.
MARKER_RE = re.compile(
    r"^\s*(?:master|upstream) commit:\s*([0-9a-f]{7,40})\b"
    r"|\(cherry picked from commit ([0-9a-f]{7,40})\)",
    re.IGNORECASE | re.MULTILINE)
# "This reverts commit <sha>", "Reverting commit <sha>", "This reverts commit A and its prereq B".
REVERT_RE = re.compile(r"\brevert(?:s|ing)?\s+(?:commits?\s+)?(?=[0-9a-f]{7,40}\b)",
                       re.IGNORECASE)
SHA_RE = re.compile(r"\b[0-9a-f]{7,40}\b")


@dataclass
class Git:
    """Minimal runner: git's exit status matters here, so no exceptions on failure."""

    cwd: Path

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE",
                                                                 "GIT_INDEX_FILE")}
        env.update(GIT_ENV, LC_ALL="C")  # git's messages are parsed
        return subprocess.run(["git", *args], cwd=self.cwd, input=input, capture_output=True,
                              text=True, env=env, errors="replace")

    def out(self, *args: str) -> str:
        return self.run(*args).stdout


@dataclass(frozen=True)
class Entry:
    sha: str
    subject: str
    body: str
    files: frozenset[str] = frozenset()  # what it changes among the paths searched


def upstreams_of(body: str) -> tuple[str, ...]:
    """Every upstream commit a message names as its origin, in order."""
    out = []
    for m in MARKER_RE.finditer(body):
        sha = (m.group(1) or m.group(2)).lower()
        if sha not in out:
            out.append(sha)
    return tuple(out)


def _same(a: str, b: str) -> bool:
    return len(min(a, b, key=len)) >= 7 and (a.startswith(b) or b.startswith(a))


def subject_key(s: str) -> str:
    return " ".join(re.sub(r"^(?:\[[^\]]*\]\s*)+", "", s).split()).lower()


_LOG_CACHE: dict[tuple[str, ...], list[Entry]] = {}
_PID_CACHE: dict[tuple[str, ...], dict[str, str]] = {}


def log_entries(g: Git, rev: str, paths: Iterable[str], depth: int = HISTORY_DEPTH
                ) -> list[Entry]:
    """Commits reachable from ``rev`` (a commit or a range) touching ``paths``, newest first."""
    key = (str(g.cwd), rev, str(depth), *paths)
    if key not in _LOG_CACHE:
        r = g.run("log", f"-n{depth}", "--format=%x01%H%x00%s%x00%b%x00", "--name-only",
                  "--no-renames", rev, "--", *paths)
        entries = []
        for rec in r.stdout.split("\x01")[1:] if r.returncode == 0 else []:
            parts = rec.split("\x00")
            if len(parts) == 4:
                entries.append(Entry(parts[0].strip(), parts[1], parts[2],
                                     frozenset(parts[3].split())))
        _LOG_CACHE[key] = entries
    return _LOG_CACHE[key]


def patch_ids(g: Git, rev: str, paths: Iterable[str], depth: int,
              files: frozenset[str]) -> dict[str, str]:
    """sha -> patch-id of its diff limited to ``paths``, for the commits changing exactly
    ``files`` there (only those can match; a commit holding the patch among other
    changes, as a squashed backport does, still matches)."""
    paths = list(paths)
    key = (str(g.cwd), rev, str(depth), *sorted(files), "--", *paths)
    if key not in _PID_CACHE:
        shas = [e.sha for e in log_entries(g, rev, paths, depth) if e.files == files]
        ids: dict[str, str] = {}
        for i in range(0, len(shas), 200):
            show = g.run("show", "--format=commit %H", "-p", "--no-color", "--no-renames",
                         *shas[i:i + 200], "--", *paths)
            fields = g.run("patch-id", "--stable", input=show.stdout).stdout.split()
            ids.update(zip(fields[1::2], fields[0::2], strict=False))
        _PID_CACHE[key] = ids
    return _PID_CACHE[key]


def diff_files(diff: str) -> frozenset[str]:
    """The files a diff changes (both names of a rename)."""
    names = set()
    for m in re.finditer(r"^(?:---|\+\+\+) (?:[ab]/)?(\S+)", diff, re.MULTILINE):
        if m.group(1) != "/dev/null":
            names.add(m.group(1))
    return frozenset(names)


def patch_id(g: Git, diff: str) -> str | None:
    fields = g.run("patch-id", "--stable", input=diff).stdout.split()
    return fields[0] if fields else None


def own_commits(commit: str | None, message: str) -> tuple[str, ...]:
    """The commits a patch is: the commit it was taken from, and every upstream it names."""
    own = [commit.lower()] if commit else []
    own += [u for u in upstreams_of(message) if u not in own]
    return tuple(own)


def equivalent_commit(g: Git, ref_commit: str, paths: list[str], diff: str,
                      subject: str, commit: str | None, message: str) -> Match | None:
    """The newest commit on the ref that is this change: itself or a backport marker naming
    it, then patch-id, then subject. Reverts after it are :func:`revert_after`'s business."""
    entries = log_entries(g, ref_commit, paths)
    own = own_commits(commit, message)
    if own:
        for e in entries:
            if any(_same(e.sha, o) for o in own):
                return Match(how="commit", commit=e.sha, subject=e.subject,
                             upstream_commit=_first(upstreams_of(e.body)))
            ups = upstreams_of(e.body)
            hit = next((u for u in ups if any(_same(u, o) for o in own)), None)
            if hit:
                return Match(how="backport-marker", commit=e.sha, subject=e.subject,
                             upstream_commit=hit)
    pid = patch_id(g, diff)
    if pid:
        ids = patch_ids(g, ref_commit, paths, PATCH_ID_DEPTH, diff_files(diff))
        for e in entries[:PATCH_ID_DEPTH]:
            if ids.get(e.sha) == pid:
                return Match(how="patch-id", commit=e.sha, subject=e.subject,
                             upstream_commit=_first(upstreams_of(e.body)))
    key = subject_key(subject)
    for e in entries:
        if key and subject_key(e.subject) == key:
            return Match(how="subject", commit=e.sha, subject=e.subject,
                         upstream_commit=_first(upstreams_of(e.body)))
    return None


def _first(items: tuple[str, ...]) -> str | None:
    return items[0] if items else None


def _names_revert_of(e: Entry, targets: list[str], subjects: list[str]) -> bool:
    """Whether ``e``'s message says it reverts one of ``targets`` (shas) or ``subjects``."""
    text = f"{e.subject}\n{e.body}"
    for m in REVERT_RE.finditer(text):
        # The shas of the sentence the verb starts ("A and its prereq B", "A, B").
        sentence = re.split(r"\n\s*\n|\.\s", text[m.end():m.end() + 300])[0]
        for sha in SHA_RE.findall(sentence):
            if any(_same(sha, t) for t in targets):
                return True
    quoted = re.match(r'^(?:[\w/.-]+:\s*)?revert\s+"(.+)"\s*$', e.subject.strip(), re.IGNORECASE)
    return bool(quoted) and subject_key(quoted.group(1)) in subjects


def revert_after(g: Git, match: Match, ref_commit: str, paths: list[str], own: tuple[str, ...],
                 patch_pid: str | None) -> Match:
    """``match`` with ``reverted_by`` set when a later commit on the ref reverted it (and
    nothing re-applied it after that)."""
    if not match.commit:
        return match
    rng = f"{match.commit}..{ref_commit}"
    later = list(reversed(log_entries(g, rng, paths, HISTORY_DEPTH)))  # oldest first
    if not later:
        return match
    reverse = g.out("diff", "--no-color", "--no-renames", match.commit, f"{match.commit}^",
                    "--", *paths)
    reverse_pid = patch_id(g, reverse)
    # Only a commit changing the same files can be the reverse, or the patch again.
    ids = patch_ids(g, rng, paths, HISTORY_DEPTH, diff_files(reverse))
    applied = [match.commit, *([match.upstream_commit] if match.upstream_commit else []), *own]
    subjects = [subject_key(match.subject or "")]
    reverted: Entry | None = None
    for e in later:
        pid = ids.get(e.sha)
        if reverted is None and ((reverse_pid and pid == reverse_pid)
                                 or _names_revert_of(e, applied, subjects)):
            reverted = e
        elif reverted is not None and ((patch_pid and pid == patch_pid)
                                       or _names_revert_of(e, [reverted.sha], [])
                                       or any(_same(u, o) for u in upstreams_of(e.body)
                                              for o in applied)):
            reverted = None  # applied again
    if reverted is None:
        return match
    return replace(match, reverted_by=reverted.sha, reverted_subject=reverted.subject)


# --------------------------------------------------------------------------- prerequisites


_GREP_CACHE: dict[tuple[str, str, tuple[str, ...]], dict[str, set[str]]] = {}
_INTRO_CACHE: dict[tuple[str, ...], tuple[str, str] | None] = {}


def symbols_at(g: Git, rev: str, symbols: Iterable[str]) -> dict[str, set[str]]:
    """symbol -> files holding it as a word at commit ``rev`` (absent symbols omitted)."""
    syms = tuple(sorted(set(symbols)))
    key = (str(g.cwd), rev, syms)
    if key in _GREP_CACHE:
        return _GREP_CACHE[key]
    found: dict[str, set[str]] = {}
    if syms:
        args = ["grep", "-o", "-w", "-F", "-I", "--no-color"]
        for s in syms:
            args += ["-e", s]
        r = g.run(*args, rev, "--")
        for line in r.stdout.splitlines():
            # "<rev>:<path>:<match>"
            rest = line[len(rev) + 1:] if line.startswith(rev + ":") else line
            path, _, word = rest.rpartition(":")
            if word in syms:
                found.setdefault(word, set()).add(path)
    _GREP_CACHE[key] = found
    return found


def merge_base(g: Git, a: str, b: str) -> str | None:
    r = g.run("merge-base", a, b)
    return r.stdout.strip() or None


def visible_from(user: str, files: Iterable[str], *, strict: bool = False) -> list[str]:
    """Of the files holding a symbol, those that say when ``user`` (a path) got it.

    Code under ``xen/arch/A`` sees its own architecture and common code; common code sees
    common headers when they hold the symbol (``BITS_PER_INT``, private to RISC-V before
    it moved to ``xen/config.h``, reached common code with the move). Never the other side
    of the ``xen/`` / ``tools/`` split. All of them if none qualifies, unless ``strict``:
    then only the files it certainly sees (its architecture's and common ones).
    """
    def area(path: str) -> tuple[str, str]:
        parts = path.split("/")
        arch = parts[2] if len(parts) > 3 and parts[1] == "arch" else ""
        return parts[0], arch

    files = list(files)
    top, arch = area(user)
    same_top = [f for f in files if area(f)[0] == top]
    if arch:
        seen = [f for f in same_top if area(f)[1] in ("", arch)]
    elif strict or any("/include/" in f and not area(f)[1] for f in same_top):
        seen = [f for f in same_top if not area(f)[1]]
    else:
        seen = same_top
    return seen if seen or strict else files


def introduced_by(g: Git, symbol: str, base: str, fork: str | None, user: str = ""
                  ) -> tuple[str, str] | None:
    """The commit in ``fork..base`` after which ``symbol`` has been in the tree ever since.

    ``git log -G`` over the files holding it at ``base`` lists the commits changing a line
    naming it; replaying its net word count from the oldest finds the last step from
    absent to present: the introduction that stuck (an introduction later reverted is
    skipped). If the symbol existed elsewhere before that commit, it moved: follow it.
    """
    user = user.rsplit(":", 1)[0]
    key = (str(g.cwd), symbol, base, fork or "", user)
    if key in _INTRO_CACHE:
        return _INTRO_CACHE[key]
    word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(symbol)}(?![A-Za-z0-9_])")
    result: tuple[str, str] | None = None
    tip = base
    for _ in range(MAX_MOVES):
        files = sorted(visible_from(user, symbols_at(g, tip, [symbol]).get(symbol, ())))
        if not files:
            break
        log = g.run("log", "-G", rf"(^|[^A-Za-z0-9_]){re.escape(symbol)}([^A-Za-z0-9_]|$)",
                    "--reverse", "-p", "-U0", "--no-color", "--no-renames",
                    "--format=%x00%H%x00%s", tip, *([f"^{fork}"] if fork else []),
                    "--", *files)
        count = 0
        step: tuple[str, str] | None = None
        parts = log.stdout.split("\x00")  # ["", sha, "subject\n<diff>", sha, ...]
        for sha, rest in zip(parts[1::2], parts[2::2], strict=False):
            subject, _, diff = rest.partition("\n")
            delta = 0
            for ln in diff.splitlines():
                if ln.startswith(("+++ ", "--- ")) or not ln.startswith(("+", "-")):
                    continue
                delta += (1 if ln[0] == "+" else -1) * len(word.findall(ln))
            if count <= 0 < count + delta:
                step = (sha, subject)
            count += delta
        if step is None:
            break
        result = step
        before = symbols_at(g, f"{step[0]}^", [symbol]) if fork != step[0] else {}
        if not visible_from(user, before.get(symbol, ()), strict=bool(user)):
            break
        tip = f"{step[0]}^"  # it was in other files before: a move, follow it back
    _INTRO_CACHE[key] = result
    return result


def clear_caches() -> None:
    for c in (_LOG_CACHE, _PID_CACHE, _GREP_CACHE, _INTRO_CACHE):
        c.clear()
