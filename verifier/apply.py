"""Apply a patch series to a checked-out ref with git, and say exactly how it went.

Order of questions, per patch of the series:
  1. does it apply as it is (``git apply``: clean, or hunks at an offset)?
  2. does it reverse-apply (the change is already there, verbatim)?
  3. does it apply with a 3-way merge (needs the ``index`` blobs in the repository)?
  4. if not: is an equivalent change already on the ref (backport markers, patch-id,
     subject; without history, its added lines present in the files)?
  5. does it use identifiers the ref does not have (missing prerequisite)?
  6. otherwise it conflicts: name the files and hunks that fail, and where.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from verifier.model import (
    ApplyResult,
    ApplyStatus,
    Checkout,
    HunkResult,
    Match,
    Patch,
    PatchSeries,
    Prerequisite,
    TreeSource,
)
from verifier.patch import DiffHunk, parse_hunks, printable, special_files
from verifier.tree import GIT_ENV, commit_worktree, mainline, reset_worktree

# Fraction of a patch's distinctive added lines that must be found in the tree to call
# it present. Measured on the seed: trees with the fix in its committed (v2) form score
# 0.58-0.97, trees without it 0.08 (see tests/test_apply.py and the README).
PRESENT_THRESHOLD = 0.5
MIN_DISTINCT_LEN = 12  # shorter added lines ("rc = 0;", "return rc;") prove nothing
HISTORY_DEPTH = 3000  # commits per ref searched for an equivalent change
MAX_PREREQ_SEARCH = 12  # identifiers whose introducing commit is looked up

# Known relocations in the Xen tree, tried before a search by file name.
KNOWN_MOVES = (("xen/include/asm-x86/", "xen/arch/x86/include/asm/"),
               ("xen/include/asm-arm/", "xen/arch/arm/include/asm/"))

C_KEYWORDS = frozenset(
    """
auto break case char const continue default do double else enum extern float for goto if
inline int long register restrict return short signed sizeof static struct switch typedef
union unsigned void volatile while bool true false NULL _Bool asm typeof __typeof__
__attribute__ __asm__ __inline__ __volatile__ defined include define ifdef ifndef endif elif
undef pragma line error
""".split()
)

Progress = Callable[[str], None]


@dataclass
class _Git:
    """Minimal runner: git's exit status matters here, so no exceptions on failure."""

    cwd: Path

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", *args], cwd=self.cwd, input=input, capture_output=True, text=True,
            env={**_base_env(), **GIT_ENV}, errors="replace",
        )

    def out(self, *args: str) -> str:
        return self.run(*args).stdout


def _base_env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.pop("GIT_DIR", None)
    env.pop("GIT_WORK_TREE", None)
    env["LC_ALL"] = "C"  # git's messages are parsed below
    return env


# --------------------------------------------------------------------------- output parsing

HUNK_OK_RE = re.compile(r"^Hunk #(\d+) succeeded at (\d+)(?: \(offset (-?\d+) lines?\))?\.")
HUNK_CLEAN_RE = re.compile(r"^Hunk #(\d+) applied cleanly\.")
HUNK_REJ_RE = re.compile(r"^Rejected hunk #(\d+)\.")
CHECKING_RE = re.compile(
    r"^(?:Checking patch|Applying patch) (.+?)(?:\.\.\.| with \d+ rejects?\.\.\.)$")
MAX_NAMED = 10  # failed hunks named in a conflict's one-line detail
FILE_CLEAN_RE = re.compile(r"^Applied patch (.+?) cleanly\.$")
NO_FILE_RE = re.compile(r"^error: (.+?): (?:No such file or directory|does not exist in index)$")


def _per_file_lines(text: str) -> dict[str, list[str]]:
    """Group git apply -v output by the file it is about."""
    current = ""
    groups: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = CHECKING_RE.match(line)
        if m:
            current = m.group(1)
            groups.setdefault(current, [])
            continue
        groups.setdefault(current, []).append(line)
    return groups


def _hunk_results(
    hunks: list[DiffHunk], output: str, moved: dict[str, str], *, rejected_ok: bool
) -> list[HunkResult]:
    """HunkResult per hunk from ``git apply -v`` (and ``--reject``) output.

    The output is read once into (file, hunk number) -> what git said, so a patch of
    many hunks costs linear time (a scan per hunk was quadratic).
    """
    groups = _per_file_lines(output)
    clean_files = {m.group(1) for ln in output.splitlines() if (m := FILE_CLEAN_RE.match(ln))}
    said: dict[tuple[str, int], tuple[str, int | None, int]] = {}
    missing: set[str] = set()
    for file, lines in groups.items():
        for line in lines:
            if (m := HUNK_OK_RE.match(line)):
                offset = int(m.group(3) or 0)
                said.setdefault((file, int(m.group(1))),
                                ("offset" if offset else "ok", int(m.group(2)), offset))
            elif (m := HUNK_CLEAN_RE.match(line)):
                said.setdefault((file, int(m.group(1))), ("ok", None, 0))
            elif (m := HUNK_REJ_RE.match(line)):
                said.setdefault((file, int(m.group(1))), ("failed", None, 0))
            elif (m := NO_FILE_RE.match(line)) and m.group(1) == file:
                missing.add(file)
    results = []
    for h in hunks:
        target = moved.get(h.file, h.file)
        # A file git reports as applied cleanly has no failed hunk, whatever it printed.
        ok = rejected_ok or target in clean_files
        status, applied, offset = ("ok" if ok else "failed"), None, 0
        if (target, h.index) in said:
            status, applied, offset = said[(target, h.index)]
            if status == "ok" and applied is None:
                applied = h.old_start
        elif ok:
            applied = h.old_start
        if target in missing:
            status, applied = "failed", None
        results.append(HunkResult(
            file=h.file, index=h.index, header=h.header, expected_line=h.old_start,
            applied_line=applied, offset=offset, status=status,
            target_file=target if target != h.file else None,
        ))
    return results


# --------------------------------------------------------------------------- file moves


def _relocate(patch: Patch, tree: Path, hunks: list[DiffHunk], files: list[str]) -> dict[str, str]:
    """Patch paths missing from the tree -> where that file lives now (same name, best match)."""
    moved: dict[str, str] = {}
    for fc in patch.files:
        old = fc.old_path
        if old is None or (tree / old).exists():
            continue
        known = [old.replace(a, b) for a, b in KNOWN_MOVES if old.startswith(a)]
        known = [c for c in known if (tree / c).is_file()]
        if known:
            moved[old] = known[0]
            continue
        # Elsewhere under the same name: the one holding most of the hunks' context.
        name = "/" + Path(old).name
        candidates = [f for f in files if f.endswith(name)]
        context = [t.strip() for h in hunks if h.file == fc.path for k, t in h.lines
                   if k != "+" and len(t.strip()) >= MIN_DISTINCT_LEN]
        best, best_score = None, 0
        for c in candidates:
            text = _normalised_lines(tree / c)
            score = sum(1 for t in context if _norm(t) in text)
            if score > best_score:
                best, best_score = c, score
        if best:
            moved[old] = best
    return moved


def _rewrite_paths(diff: str, moved: dict[str, str]) -> str:
    """Point the diff's file headers at the files' current locations."""
    if not moved:
        return diff
    out = []
    for line in diff.splitlines(keepends=True):
        if line.startswith(("--- ", "+++ ", "diff --git ", "rename from ", "rename to ")):
            for old, new in moved.items():
                line = line.replace(f"a/{old}", f"a/{new}").replace(f"b/{old}", f"b/{new}")
        out.append(line)
    return "".join(out)


def _norm(s: str) -> str:
    return " ".join(s.split())


def _normalised_lines(path: Path) -> dict[str, list[int]]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {}
    index: dict[str, list[int]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        index.setdefault(_norm(line), []).append(n)
    return index


# --------------------------------------------------------------------------- already applied


def _distinct_added(hunks: list[DiffHunk]) -> list[tuple[DiffHunk, str]]:
    """Added lines that say something: not braces/comments, not short, not already context."""
    old = {_norm(t) for h in hunks for k, t in h.lines if k != "+"}
    out = []
    for h in hunks:
        for k, t in h.lines:
            n = _norm(t)
            if k != "+" or len(n) < MIN_DISTINCT_LEN or n in old:
                continue
            if re.fullmatch(r"[{}();\s]*", n) or n.startswith(("/*", "*", "//")):
                continue
            out.append((h, n))
    return out


def lines_present(hunks: list[DiffHunk], tree: Path, moved: dict[str, str]) -> Match | None:
    """The patch's distinctive added lines found in the tree's files (no history needed).

    Each hunk counts only the lines found together in one window of the file (twice the
    hunk's size), so generic lines matching elsewhere in a big file prove nothing.
    """
    wanted = _distinct_added(hunks)
    if not wanted:
        return None
    cache: dict[str, dict[str, list[int]]] = {}
    found: dict[str, list[int]] = {}
    hits = 0
    by_hunk: dict[int, list[str]] = {}
    for hh, n in wanted:
        by_hunk.setdefault(id(hh), []).append(n)
    for h in hunks:
        lines = by_hunk.get(id(h))
        if not lines:
            continue
        f = moved.get(h.file, h.file)
        index = cache.setdefault(f, _normalised_lines(tree / f))
        places = sorted((pos, i) for i, n in enumerate(lines) for pos in index.get(n, []))
        span = max(2 * h.new_len, 20)
        best_n, best_range = 0, (0, 0)
        counts: dict[int, int] = {}
        right = 0
        for left, (start, _) in enumerate(places):  # a sliding window: linear in places
            while right < len(places) and places[right][0] <= start + span:
                counts[places[right][1]] = counts.get(places[right][1], 0) + 1
                right += 1
            if len(counts) > best_n:
                best_n, best_range = len(counts), (left, right)
            i = places[left][1]
            counts[i] -= 1
            if not counts[i]:
                del counts[i]
        hits += best_n
        if best_n:
            found.setdefault(f, []).extend(pos for pos, _ in places[slice(*best_range)])
    score = hits / len(wanted)
    if score < PRESENT_THRESHOLD:
        return None
    locations = tuple(f"{f}:{r}" for f, lines in found.items() for r in _ranges(lines))
    return Match(how="lines-present", locations=locations, score=round(score, 2))


def _ranges(lines: Iterable[int], gap: int = 8) -> list[str]:
    """[10, 11, 12, 40] -> ["10-12", "40"] (lines within ``gap`` of each other join)."""
    out: list[list[int]] = []
    for n in sorted(set(lines)):
        if out and n - out[-1][1] <= gap:
            out[-1][1] = n
        else:
            out.append([n, n])
    return [f"{a}-{b}" if a != b else f"{a}" for a, b in out]


MARKER_RE = re.compile(
    r"^(?:master commit|upstream commit|commit):?\s*([0-9a-f]{7,40})\b|"
    r"\(cherry picked from commit ([0-9a-f]{7,40})\)", re.IGNORECASE | re.MULTILINE)


def _upstream_of(body: str) -> str | None:
    m = MARKER_RE.search(body)
    return (m.group(1) or m.group(2)) if m else None


def _subject_key(s: str) -> str:
    return _norm(re.sub(r"^(?:\[[^\]]*\]\s*)+", "", s)).lower()


def equivalent_commit(patch: Patch, g: _Git, commit: str, paths: list[str]) -> Match | None:
    """A commit on the ref that is this change: backport marker, patch-id, then subject."""
    log = g.run("log", f"-n{HISTORY_DEPTH}", "--format=%H%x00%s%x00%b%x01", commit, "--", *paths)
    if log.returncode:
        return None
    entries = []
    for rec in log.stdout.split("\x01"):
        parts = rec.strip("\n").split("\x00")
        if len(parts) == 3:
            entries.append((parts[0].strip(), parts[1], parts[2]))
    own = patch.meta.commit or _upstream_of(patch.message)
    if own:
        for sha, subj, body in entries:
            up = _upstream_of(body)
            if up and (own.startswith(up) or up.startswith(own)):
                return Match(how="backport-marker", commit=sha, subject=subj, upstream_commit=up)
            if sha.startswith(own):
                return Match(how="commit", commit=sha, subject=subj)
    pid = _patch_id(g, patch.diff)
    if pid:
        shas = [e[0] for e in entries[:500]]
        if shas:
            show = g.run("show", "--format=commit %H", "--no-color", *shas)
            ids = g.run("patch-id", "--stable", input=show.stdout).stdout.split()
            for p, sha in zip(ids[0::2], ids[1::2], strict=False):
                if p == pid:
                    subj, body = next((s, b) for h, s, b in entries if h == sha)
                    return Match(how="patch-id", commit=sha, subject=subj,
                                 upstream_commit=_upstream_of(body))
    key = _subject_key(patch.meta.subject)
    for sha, subj, body in entries:
        if _subject_key(subj) == key:
            return Match(how="subject", commit=sha, subject=subj,
                         upstream_commit=_upstream_of(body))
    return None


def _patch_id(g: _Git, diff: str) -> str | None:
    r = g.run("patch-id", "--stable", input=diff)
    fields = r.stdout.split()
    return fields[0] if fields else None


# --------------------------------------------------------------------------- prerequisites

COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'", re.DOTALL)
IDENT_RE = re.compile(r"\b[A-Za-z_]\w*\b")


def _code_identifiers(lines: list[str]) -> set[str]:
    text = "\n".join(lines)
    # A hunk may start inside a comment: drop a leading tail of one.
    if "*/" in text and ("/*" not in text or text.index("*/") < text.index("/*")):
        text = text[text.index("*/") + 2:]
    text = COMMENT_RE.sub(" ", text)
    text = re.sub(r"^\s*\*.*$", " ", text, flags=re.MULTILINE)  # comment continuation lines
    return {t for t in IDENT_RE.findall(text) if t not in C_KEYWORDS and not t[0].isdigit()}


def _declared_by_patch(hunks: list[DiffHunk]) -> set[str]:
    """Identifiers the patch itself declares/defines in added lines (locals, fields, macros)."""
    out: set[str] = set()
    decl = re.compile(r"\b[A-Za-z_]\w*[\s*]+([A-Za-z_]\w*)\s*(?:[;=,\[]|\)\s*;)")
    for h in hunks:
        for k, t in h.lines:
            if k != "+":
                continue
            t = COMMENT_RE.sub(" ", t)
            out.update(m.group(1) for m in decl.finditer(t))
            m = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)", t)
            if m:
                out.add(m.group(1))
    return out


def missing_identifiers(
    hunks: list[DiffHunk], tree: Path, moved: dict[str, str] | None = None
) -> dict[str, str]:
    """Identifiers the patch relies on that occur nowhere in the tree -> a file using them."""
    moved = moved or {}
    uses: dict[str, str] = {}
    for h in hunks:
        for ident in _code_identifiers([t for _, t in h.lines]):
            uses.setdefault(ident, h.file)
    candidates = set(uses) - _declared_by_patch(hunks)
    # Most are in the files the patch touches: rule those out without searching the tree.
    for f in {moved.get(h.file, h.file) for h in hunks}:
        with contextlib.suppress(OSError):
            candidates -= set(IDENT_RE.findall((tree / f).read_text(errors="replace")))
    if not candidates:
        return {}
    args = ["grep", "-h", "-o", "-w", "-F", "-I", "--no-color"]
    for c in sorted(candidates):
        args += ["-e", c]
    r = _Git(tree).run(*args, "--", ".")
    present = set(r.stdout.split())
    return {c: uses[c] for c in sorted(candidates - present)}


def introduced_by(
    g: _Git, symbols: list[str], line: str, ref_commit: str, scope: list[str]
) -> dict[str, tuple[str, str]]:
    """Per symbol, the commit on ``line`` after which it has been in the tree ever since.

    One ``git log -G`` pass (a regex of all symbols) over the commits on ``line`` that the
    ref lacks lists every commit touching a line that names a symbol; replaying each
    symbol's net +/- count from the oldest finds its last 0 -> present step: the
    introduction that stuck (m2p_strict was added, reverted and added again in 2015). ``scope``: the
    top-level folders to search (the patch's).
    """
    if not symbols:
        return {}
    base = g.out("merge-base", ref_commit, line).strip()
    pickaxe = "|".join(re.escape(s) for s in symbols)
    # -G (a +/- line mentions a symbol) rather than a combined -S: -S counts all the
    # symbols together and misses a commit trading one for another.
    log = g.run("log", "-G", pickaxe, "--reverse", "-p", "-U0",
                "--no-color", "--no-renames", "--format=%x00%H%x00%s", line,
                *([f"^{base}"] if base else []), "--", *scope)
    count = dict.fromkeys(symbols, 0)
    found: dict[str, tuple[str, str]] = {}
    parts = log.stdout.split("\x00")  # ["", sha, "subject\n<diff>", sha, ...]
    for sha, rest in zip(parts[1::2], parts[2::2], strict=False):
        subject, _, diff = rest.partition("\n")
        delta = dict.fromkeys(symbols, 0)
        for ln in diff.splitlines():
            if ln.startswith(("+++ ", "--- ")) or not ln.startswith(("+", "-")):
                continue
            sign = 1 if ln[0] == "+" else -1
            for sym in symbols:
                delta[sym] += sign * ln.count(sym)  # what -S counts: substrings, not words
        for sym in symbols:
            if count[sym] <= 0 < count[sym] + delta[sym]:
                found[sym] = (sha, subject)
            count[sym] += delta[sym]
    return found


# --------------------------------------------------------------------------- one patch


def _git_apply(g: _Git, diff_file: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return g.run("apply", "--verbose", *flags, str(diff_file))


def apply_patch(
    patch: Patch, co: Checkout, scratch: Path, progress: Progress | None = None
) -> ApplyResult:
    """Apply one patch to the worktree (left applied and committed on success)."""
    special = special_files(patch.diff)
    if special:  # never followed, so never created: the checks read the patched tree
        named = ", ".join(f"{printable(p)} ({what})" for p, what in special[:5])
        return _error(f"the patch creates {named}: refused; xen-verify does not create "
                      "or follow links a patch makes")
    g = _Git(co.path)
    hist = _Git(co.source.git_dir)  # history questions go to the source repository (read-only)
    hunks = parse_hunks(patch.diff)
    files = g.out("ls-files").splitlines()
    moved = _relocate(patch, co.path, hunks, files)
    diff = _rewrite_paths(patch.diff, moved)
    diff_file = scratch / "patch.diff"
    diff_file.write_text(diff)
    moved_t = tuple(moved.items())
    tree_paths = [moved.get(f, f) for f in _paths(patch)]
    moved_note = "".join(f"; {a} is now {b}" for a, b in moved.items())

    fwd = _git_apply(g, diff_file, "--check")
    if fwd.returncode == 0:
        hr = _hunk_results(hunks, fwd.stdout + fwd.stderr, moved, rejected_ok=True)
        applied = g.run("apply", "--index", str(diff_file))
        if applied.returncode:
            return _error(f"git apply --check passed but apply failed: {_last(applied.stderr)}")
        offsets = [h for h in hr if h.offset]
        if offsets:
            detail = ", ".join(f"{h.target_file or h.file} hunk #{h.index} {h.offset:+d}"
                               for h in offsets)
            return ApplyResult(ApplyStatus.OFFSETS, f"applies with offsets: {detail}{moved_note}",
                               hunks=tuple(hr), moved_files=moved_t)
        return ApplyResult(ApplyStatus.CLEAN, f"applies cleanly{moved_note}", hunks=tuple(hr),
                           moved_files=moved_t)

    history = co.source.has_history
    rev = _git_apply(g, diff_file, "--check", "--reverse")
    if rev.returncode == 0:
        match = Match(how="reverse-apply")
        if history:
            if progress:
                progress("looking for the commit that applied it")
            found = equivalent_commit(patch, hist, co.commit, tree_paths)
            if found:
                match = replace(found, how=f"reverse-apply; {found.how}")
        return ApplyResult(ApplyStatus.ALREADY_APPLIED,
                           "already applied: the patch reverse-applies" + _named(match),
                           matches=(match,), moved_files=moved_t)

    three = _git_apply(g, diff_file, "--3way", "--index")
    if three.returncode == 0 and g.run("diff", "--cached", "--quiet", "HEAD").returncode == 0:
        reset_worktree(g.cwd)  # merged to nothing new: the change is there, merge-equivalent
        match = Match(how="three-way merge adds nothing")
        if history:
            found = equivalent_commit(patch, hist, co.commit, tree_paths)
            match = replace(found, how=f"three-way no-op; {found.how}") if found else match
        return ApplyResult(ApplyStatus.ALREADY_APPLIED,
                           "already applied: a 3-way merge of it changes nothing" + _named(match),
                           matches=(match,), moved_files=moved_t)
    if three.returncode == 0:
        hr = _hunk_results(hunks, three.stdout + three.stderr, moved, rejected_ok=True)
        return ApplyResult(ApplyStatus.THREE_WAY, f"applies with a 3-way merge{moved_note}",
                           hunks=tuple(replace(h, status="three-way") for h in hr),
                           moved_files=moved_t)
    reset_worktree(g.cwd)

    if history:
        if progress:
            progress("looking for an equivalent commit on the ref")
        found = equivalent_commit(patch, hist, co.commit, tree_paths)
        if found:
            return ApplyResult(ApplyStatus.ALREADY_APPLIED,
                               f"already applied in another form{_named(found)}",
                               matches=(found,), moved_files=moved_t)
    present = lines_present(hunks, co.path, moved)
    if present:
        where = ", ".join(present.locations[:4])
        n = len(_distinct_added(hunks))
        return ApplyResult(
            ApplyStatus.ALREADY_APPLIED,
            f"already applied in another form: {round(present.score * n)}/{n} of its "
            f"distinctive added lines are in the tree ({where})",
            matches=(present,), moved_files=moved_t)

    missing = missing_identifiers(hunks, co.path, moved)
    if missing:
        line = mainline(co.source) if history else None
        intros: dict[str, tuple[str, str]] = {}
        if line:
            if progress:
                progress(f"which commits on {line} introduced {', '.join(missing)}")
            scope = sorted({p.split("/", 1)[0] + "/" for p in _paths(patch) if "/" in p})
            intros = introduced_by(hist, list(missing)[:MAX_PREREQ_SEARCH], line, co.commit,
                                   scope or ["."])
        prereqs = []
        for sym, used_in in missing.items():
            intro = intros.get(sym)
            prereqs.append(Prerequisite(symbol=sym, used_in=used_in,
                                        introduced_by=intro[0] if intro else None,
                                        introduced_subject=intro[1] if intro else None))
        names = ", ".join(p.symbol for p in prereqs[:8]) + (" ..." if len(prereqs) > 8 else "")
        intro_note = ""
        firsts = {(p.introduced_by, p.introduced_subject) for p in prereqs if p.introduced_by}
        if firsts:
            intro_note = "; introduced by " + ", ".join(
                f"{sha[:10]} (\"{subj}\")" for sha, subj in sorted(firsts, key=str))
        return ApplyResult(ApplyStatus.MISSING_PREREQUISITE,
                           f"missing prerequisite: the ref lacks {names}{intro_note}",
                           prerequisites=tuple(prereqs), moved_files=moved_t)

    rej = _git_apply(g, diff_file, "--reject")
    hr = _hunk_results(hunks, rej.stdout + rej.stderr, moved, rejected_ok=False)
    reset_worktree(g.cwd)
    failed = [h for h in hr if h.status == "failed"]
    where = ", ".join(f"{printable(h.target_file or h.file)} hunk #{h.index} (expected at line "
                      f"{h.expected_line})" for h in failed[:MAX_NAMED]) or _last(fwd.stderr)
    if len(failed) > MAX_NAMED:  # the detail is one line: name a few, count the rest
        where += f" and {len(failed) - MAX_NAMED} more hunks"
    return ApplyResult(ApplyStatus.CONFLICT, f"conflict: {where}{moved_note}", hunks=tuple(hr),
                       moved_files=moved_t)


def _paths(patch: Patch) -> list[str]:
    return sorted({p for fc in patch.files for p in (fc.old_path, fc.new_path) if p})


def _named(m: Match) -> str:
    if m.commit:
        up = f", upstream {m.upstream_commit[:12]}" if m.upstream_commit else ""
        return f": {m.commit[:12]} (\"{m.subject}\"{up}) by {m.how.split('; ')[-1]}"
    return ""


def _last(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "git apply failed"


def _error(detail: str) -> ApplyResult:
    return ApplyResult(ApplyStatus.ERROR, detail)


# --------------------------------------------------------------------------- series


SEVERITY = [ApplyStatus.ERROR, ApplyStatus.CONFLICT, ApplyStatus.MISSING_PREREQUISITE,
            ApplyStatus.THREE_WAY, ApplyStatus.OFFSETS, ApplyStatus.CLEAN,
            ApplyStatus.ALREADY_APPLIED]


def base_info(
    series: PatchSeries, source: TreeSource, commit: str
) -> tuple[str | None, bool | None]:
    """What the series says it was written against, and whether this ref is that base."""
    first = series.patches[0]
    g = _Git(source.git_dir)
    if first.meta.base_commit:
        r = g.run("rev-parse", "--verify", "--quiet", f"{first.meta.base_commit}^{{commit}}")
        known = r.returncode == 0
        return (f"base-commit {first.meta.base_commit}",
                (r.stdout.strip() == commit) if known else None)
    blobs = [(fc.old_path, fc.old_blob) for fc in first.files
             if fc.old_path and fc.old_blob and set(fc.old_blob) != {"0"}]
    if not blobs:
        return None, None
    same = []
    for path, blob in blobs:
        r = g.run("rev-parse", "--verify", "--quiet", f"{commit}:{path}")
        same.append(r.returncode == 0 and r.stdout.strip().startswith(blob))
    desc = "index blobs " + ", ".join(f"{p}@{b}" for p, b in blobs[:3])
    return desc, all(same)


def apply_series(
    series: PatchSeries, co: Checkout, progress: Progress | None = None
) -> ApplyResult:
    """Apply every patch in order; the series' status is its worst member's."""
    written, matches_base = base_info(series, co.source, co.commit)
    results: list[ApplyResult] = []
    head = None  # the last commit holding an applied patch
    with tempfile.TemporaryDirectory(prefix="xen-verify-apply-") as scratch:
        for patch in series.patches:
            try:
                r = apply_patch(patch, co, Path(scratch), progress)
            except OSError as e:
                r = _error(f"cannot apply: {e}")
            results.append(r)
            if r.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS, ApplyStatus.THREE_WAY):
                head = commit_worktree(co.path, patch.meta.subject)
            elif r.status is not ApplyStatus.ALREADY_APPLIED:
                break  # later patches build on this one
    worst = min(results, key=lambda r: SEVERITY.index(r.status))
    if len(series.patches) > 1:
        members = tuple((p.meta.subject, str(r.status), r.detail)
                        for p, r in zip(series.patches, results, strict=False))
        skipped = len(series.patches) - len(results)
        detail = worst.detail if skipped == 0 else f"{worst.detail} (and {skipped} later not tried)"
        worst = replace(worst, patches=members, detail=f"patch {results.index(worst) + 1}/"
                        f"{len(series.patches)}: {detail}")
        worst = replace(worst, hunks=tuple(h for r in results for h in r.hunks))
    applied = worst.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS, ApplyStatus.THREE_WAY)
    return replace(worst, written_against=written, base_matches=matches_base,
                   patched_commit=head if applied else None)
