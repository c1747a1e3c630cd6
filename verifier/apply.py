"""Apply a patch series to a checked-out ref with git, and say exactly how it went.

Order of questions, per patch of the series:
  1. what does the ref's history say (verifier/history.py): the patch's own commit or a
     backport marker naming it decides ``already-applied`` (naming the hunks a partial
     backport left out), unless a later commit reverted it; a patch-id or subject match
     decides where the patch does not apply as it is (before any 3-way merge);
  2. does it reverse-apply (the change is already there, verbatim)?
  3. does it apply as it is (``git apply``: clean, or hunks at an offset), or with a
     3-way merge (needs the ``index`` blobs in the repository)?
  4. without history: are its distinctive added lines already in the files?
  5. whatever the answer to 3, do its added lines use identifiers the ref lacks (missing
     prerequisite, with the commit that introduced each)?
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

from verifier import history
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
from verifier.tree import commit_worktree, mainline, reset_worktree

# Fraction of a patch's distinctive added lines that must be found in the tree to call
# it present. Measured on the seed: trees with the fix in its committed (v2) form score
# 0.58-0.97, trees without it 0.08 (see tests/test_apply.py and the README).
PRESENT_THRESHOLD = 0.5
MIN_DISTINCT_LEN = 12  # shorter added lines ("rc = 0;", "return rc;") prove nothing
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


_Git = history.Git


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


# --------------------------------------------------------------------------- history


def _patch_base(patch: Patch, hist: history.Git) -> str | None:
    """The commit the patch was written on: a commit's parent, or its ``base-commit:``."""
    for rev in ([f"{patch.meta.commit}^"] if patch.meta.commit else []) + (
            [patch.meta.base_commit] if patch.meta.base_commit else []):
        r = hist.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if r.returncode == 0:
            return r.stdout.strip()
    return None


@dataclass
class _History:
    """What the ref's history says about this patch (asked once per patch and ref)."""

    match: Match | None  # the newest equivalent commit, not reverted since
    reverted: Match | None  # one that was, with ``reverted_by``


def _history(patch: Patch, diff: str, hist: history.Git, ref_commit: str, paths: list[str],
             base: str | None) -> _History:
    own = history.own_commits(patch.meta.commit, patch.message)
    # The patch's own commit on the ref is the plainest answer.
    for sha in own:
        r = hist.run("merge-base", "--is-ancestor", sha, ref_commit)
        if r.returncode == 0 and (full := hist.out("rev-parse", "--verify", "--quiet",
                                                  f"{sha}^{{commit}}").strip()):
            m = Match(how="commit", commit=full,
                      subject=hist.out("log", "-1", "--format=%s", full).strip())
            return _checked(hist, m, ref_commit, paths, own, diff)
    # With a known base, an equivalent commit can only be on the ref's side of the fork:
    # an older mainline commit with the same subject is another change.
    fork = history.merge_base(hist, ref_commit, base) if base else None
    rev = f"{fork}..{ref_commit}" if fork else ref_commit
    found = history.equivalent_commit(hist, rev, paths, diff, patch.meta.subject,
                                      patch.meta.commit, patch.message)
    if found is None:
        return _History(None, None)
    return _checked(hist, found, ref_commit, paths, own, diff)


def _checked(hist: history.Git, m: Match, ref_commit: str, paths: list[str],
             own: tuple[str, ...], diff: str) -> _History:
    m = history.revert_after(hist, m, ref_commit, paths, own, history.patch_id(hist, diff))
    return _History(None, m) if m.reverted_by else _History(m, None)


def _left_out(g: _Git, hunks: list[DiffHunk], moved: dict[str, str], diff_file: Path
              ) -> tuple[str, ...]:
    """Hunks whose change is not on the ref: those that still apply there (one
    ``git apply --reject`` pass, undone at once)."""
    rej = _git_apply(g, diff_file, "--reject")
    hr = _hunk_results(hunks, rej.stdout + rej.stderr, moved, rejected_ok=False)
    reset_worktree(g.cwd)
    return tuple(f"{h.target_file or h.file} #{h.index} {h.header}" for h in hr
                 if h.status in ("ok", "offset"))


def _named(m: Match) -> str:
    if not m.commit:
        return ""
    up = f", upstream {m.upstream_commit[:12]}" if m.upstream_commit else ""
    return f": {m.commit[:12]} (\"{m.subject}\"{up}) by {m.how.split('; ')[-1]}"


def _reverted_note(m: Match) -> str:
    up = f" (backport of {m.upstream_commit[:12]})" if m.upstream_commit else ""
    return (f"; not on the ref: {m.commit[:12] if m.commit else '?'} (\"{m.subject}\"){up} "
            f"was reverted by {(m.reverted_by or '')[:12]} (\"{m.reverted_subject}\")")


def _partial_note(m: Match, n_hunks: int) -> str:
    if not m.left_out:
        return ""
    return (f"; a partial backport: {len(m.left_out)} of {n_hunks} hunks left out "
            f"({', '.join(m.left_out)})")


# --------------------------------------------------------------------------- prerequisites

COMMENT_RE = re.compile(r"/\*.*?\*/|//[^\n]*|\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*'",
                        re.DOTALL)
IDENT_RE = re.compile(r"\b[A-Za-z_]\w*\b")
SOURCE_SUFFIXES = (".c", ".h")  # where an identifier means a C symbol
PASTED = "#pasted:"  # marks, in series_defines(), a name a macro may paste into others
# Words that begin a statement, not a declaration ("return rc;" declares nothing).
_NOT_TYPES = frozenset("return goto case else do sizeof typeof if while for switch".split())
_DECL_RE = re.compile(
    r"^\s*(?:(?:static|extern|const|volatile|register|inline|unsigned|signed)\s+)*"
    r"(?:(?:struct|union|enum)\s+)?([A-Za-z_]\w*)"
    r"((?:\s*\*+\s*|\s+)(?:[A-Za-z_]\w*(?:\s*\*+\s*|\s+))*?\**\s*)"  # attributes, const
    r"([A-Za-z_]\w*)\s*(?=[;=,\[):]|$)")


def _blank(text: str) -> str:
    """Comments and string/char literals as spaces, newlines kept."""
    return COMMENT_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _new_side(h: DiffHunk) -> list[tuple[str, int, str]]:
    """(kind, new-side line number, code with comments/strings blanked) per line."""
    rows = [(k, t) for k, t in h.lines if k != "-"]
    text = "\n".join(t for _, t in rows)
    # A hunk may start inside a comment: drop its tail.
    if "*/" in text and ("/*" not in text or text.index("*/") < text.index("/*")):
        cut = text.index("*/") + 2
        text = re.sub(r"[^\n]", " ", text[:cut]) + text[cut:]
    code = _blank(text).split("\n")
    out = []
    for n, ((k, _), c) in enumerate(zip(rows, code, strict=False)):
        if re.match(r"^\s*\*", c) and not re.match(r"^\s*\*\s*\w+\s*=", c):
            c = ""  # continuation line of a comment whose opening the hunk does not show
        out.append((k, h.new_start + n, c))
    return out


def series_defines(hunks: Iterable[DiffHunk]) -> set[str]:
    """Identifiers the series' added lines define: macros and their parameters, functions
    and their parameters, variables, fields, labels, tags, enum constants, Kconfig options."""
    out: set[str] = set()
    for h in hunks:
        rows = _new_side(h)
        added = [c for k, _, c in rows if k == "+"]
        if not h.file.endswith(SOURCE_SUFFIXES):
            for c in added:
                m = re.match(r"^\s*(?:menu)?config\s+([A-Za-z_]\w*)", c)
                if m:
                    out.update({m.group(1), f"CONFIG_{m.group(1)}"})
            continue
        for c in added:
            m = re.match(r"^\s*#\s*define\s+([A-Za-z_]\w*)(\(([^)]*)\))?", c)
            if m:
                out.add(m.group(1))
                out.update(IDENT_RE.findall(m.group(3) or ""))
                continue
            for m in re.finditer(r"\b(?:struct|union|enum)\s+([A-Za-z_]\w*)\s*\{", c):
                out.add(m.group(1))
            for m in re.finditer(r"\benum\b[^{]*\{([^}]*)", c):  # enum { A, B = 4 }
                out.update(re.findall(r"(?:^|,)\s*([A-Za-z_]\w*)", m.group(1)))
            for m in re.finditer(r"\(\s*\*\s*([A-Za-z_]\w*)\s*\)\s*\(", c):
                out.add(m.group(1))  # function pointer
            m = re.match(r"^\s*([A-Za-z_]\w*)\s*:(?!:)", c)
            if m and m.group(1) not in ("default", "public", "private"):
                out.add(m.group(1))  # label
            m = re.match(r"^\s*([A-Z_][A-Z0-9_]*)\s*(?:=[^=][^,]*)?,?\s*$", c)
            if m:
                out.add(m.group(1))  # enum constant
            m = re.match(r"^\s*(?:static\s+)?(?:DEFINE|DECLARE)_\w*\((.*)\)", c)
            if m:
                args = IDENT_RE.findall(m.group(1))
                out.update(args[-1:])
            m = re.match(r"^\s*[A-Z][A-Z0-9_]*\(\s*([A-Za-z_]\w*)\s*,", c)
            if m:  # a table macro naming a new entry: "XEN_CPUFEATURE(SC_DIV, ...)"
                out.add(f"{PASTED}{m.group(1)}")
            if not c[:1].isspace():
                # A definition or prototype at file level: its name and its parameters.
                m = re.match(r"^[A-Za-z_][\w\s\*]*?\b([A-Za-z_]\w*)\s*\(", c)
                if m and m.group(1) not in _NOT_TYPES:
                    out.add(m.group(1))
            for stmt in re.split(r"[;{}]", c):  # "struct s { int a; };" holds two
                out.update(_declared(stmt + ";"))
    return out


def _declared(code: str) -> set[str]:
    """Names a declaration statement on this line declares: ``int a, *b = x, c[2];``,
    and ``type name`` pairs in a parameter list."""
    out: set[str] = set()
    m = _DECL_RE.match(code)
    # "struct s;" declares a tag it still needs defined: not a definition.
    if (m and m.group(1) not in _NOT_TYPES and m.group(1) not in C_KEYWORDS - _TYPE_WORDS
            and m.group(1) not in ("struct", "union", "enum")):
        out.add(m.group(3))
        depth, piece, pieces = 0, "", []
        for ch in code[m.end():]:
            depth += ch in "([{"
            depth -= ch in ")]}"
            if ch == "," and depth == 0:
                pieces.append(piece)
                piece = ""
            elif depth == 0 or ch in "([{":
                piece += ch
        pieces.append(piece)
        for p in pieces[1:]:
            n = re.match(r"^\s*\**\s*([A-Za-z_]\w*)\s*(?:[;=\[]|$)", p)
            if n:
                out.add(n.group(1))
    for p in re.finditer(r"(?:\(|,)\s*(?:const\s+)?(?:(?:struct|union|enum|unsigned|signed)\s+)?"
                         r"[A-Za-z_]\w*(?:\s*\*+\s*|\s+)(?:const\s+)?([A-Za-z_]\w*)\s*(?=[,)])",
                         code):
        out.add(p.group(1))
    return out


_TYPE_WORDS = frozenset("char int long short void bool double float unsigned signed const "
                        "volatile static struct union enum extern inline register _Bool".split())


def used_identifiers(hunks: Iterable[DiffHunk]) -> dict[str, list[str]]:
    """C identifiers in the added lines of .c/.h files -> where ("file:line") they are used.
    Context and removed lines are not counted (they are on the ref if the hunk applies),
    nor comments, strings and ``#include`` lines."""
    uses: dict[str, list[str]] = {}
    for h in hunks:
        if not h.file.endswith(SOURCE_SUFFIXES):
            continue
        for k, n, c in _new_side(h):
            if k != "+" or re.match(r"^\s*#\s*(?:include|error|warning|pragma)\b", c):
                continue
            for ident in IDENT_RE.findall(c):
                if ident not in C_KEYWORDS:
                    uses.setdefault(ident, []).append(f"{h.file}:{n}")
    return uses


def missing_identifiers(
    hunks: list[DiffHunk], tree: Path, moved: dict[str, str] | None = None,
    defined: set[str] | None = None,
) -> dict[str, list[str]]:
    """Identifiers the added lines use that the series does not define and that occur
    nowhere in the worktree -> where the patch uses each."""
    moved = moved or {}
    uses = used_identifiers(hunks)
    defined = series_defines(hunks) if defined is None else defined
    # A table macro's entry may be used under a pasted name (X86_FEATURE_SC_DIV).
    pasted = {d[len(PASTED):] for d in defined if d.startswith(PASTED)}
    candidates = {u for u in uses if u not in defined
                  and not any(u == p or u.endswith(f"_{p}") for p in pasted)}
    # Most are in the files the patch touches: rule those out without searching the tree.
    for f in {moved.get(h.file, h.file) for h in hunks}:
        with contextlib.suppress(OSError):
            candidates -= set(IDENT_RE.findall((tree / f).read_text(errors="replace")))
    if not candidates:
        return {}
    present = _grep_words(tree, candidates)
    configs = {c for c in candidates - present if c.startswith("CONFIG_")}
    if configs:  # a Kconfig option is spelt without its prefix where it is declared
        kc = _grep_words(tree, {c[len("CONFIG_"):] for c in configs}, ":(glob)**/Kconfig*")
        present |= {f"CONFIG_{c}" for c in kc}
    return {c: uses[c] for c in sorted(candidates - present)}


def _grep_words(tree: Path, words: set[str], *pathspec: str) -> set[str]:
    args = ["grep", "-h", "-o", "-w", "-F", "-I", "--no-color"]
    for c in sorted(words):
        args += ["-e", c]
    return set(_Git(tree).run(*args, "--", *(pathspec or (".",))).stdout.split())


def _prerequisites(
    patch: Patch, hunks: list[DiffHunk], co: Checkout, moved: dict[str, str],
    defined: set[str], base: str | None, progress: Progress | None,
) -> tuple[Prerequisite, ...]:
    """What the patch's added lines use that the ref lacks, and where it came from.

    With history, a prerequisite must also be in the tree the patch was written on (its
    base; else the mainline tip) and absent where the ref forked from it: a symbol the
    ref once had and dropped is the ref moving on, not a missing prerequisite; one the
    base lacks is the patch's own. Its introducing commit is searched on the base's side.
    """
    missing = missing_identifiers(hunks, co.path, moved, defined)
    if not missing:
        return ()
    intros: dict[str, tuple[str, str] | None] = {}
    if co.source.has_history:
        hist = history.Git(co.source.git_dir)
        tip = base or mainline(co.source)
        if tip:
            at_base = history.symbols_at(hist, tip, missing)
            fork = history.merge_base(hist, co.commit, tip)
            at_fork = history.symbols_at(hist, fork, missing) if fork else {}
            missing = {s: u for s, u in missing.items() if s in at_base and s not in at_fork}
            if missing and progress:
                progress(f"which commits introduced {', '.join(list(missing)[:8])}")
            for sym in list(missing)[:MAX_PREREQ_SEARCH]:
                intros[sym] = history.introduced_by(hist, sym, tip, fork, user=missing[sym][0])
    out = []
    for sym, where in missing.items():
        intro = intros.get(sym)
        out.append(Prerequisite(symbol=sym, used_in=where[0].rsplit(":", 1)[0],
                                introduced_by=intro[0] if intro else None,
                                introduced_subject=intro[1] if intro else None,
                                used_at=tuple(dict.fromkeys(where))[:8]))
    return tuple(out)


def _prerequisite_result(prereqs: tuple[Prerequisite, ...], moved_t: tuple[tuple[str, str], ...],
                         how: str, extra: str = "") -> ApplyResult:
    names = ", ".join(p.symbol for p in prereqs[:8]) + (" ..." if len(prereqs) > 8 else "")
    intro_note = ""
    firsts = {(p.introduced_by, p.introduced_subject) for p in prereqs if p.introduced_by}
    if firsts:
        intro_note = "; introduced by " + ", ".join(
            f"{sha[:10]} (\"{subj}\")" for sha, subj in sorted(firsts, key=str))
    where = f"; used at {prereqs[0].used_at[0]}" if prereqs[0].used_at else ""
    return ApplyResult(ApplyStatus.MISSING_PREREQUISITE,
                       f"missing prerequisite ({how}): the ref lacks {names}{intro_note}"
                       f"{where}{extra}", prerequisites=prereqs, moved_files=moved_t)


# --------------------------------------------------------------------------- one patch


def _git_apply(g: _Git, diff_file: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return g.run("apply", "--verbose", *flags, str(diff_file))


# History that decides even where the patch applies as it is. A patch-id or a subject
# match does not: two changes alike in text (the same one-line case added to two
# functions) share a patch-id, and where the patch applies its change is not there.
STRONG = ("commit", "backport-marker")


def apply_patch(
    patch: Patch, co: Checkout, scratch: Path, progress: Progress | None = None, *,
    defined: set[str] | None = None,
) -> ApplyResult:
    """Apply one patch to the worktree (left applied and committed on success).

    ``defined``: identifiers the whole series defines (none of them is a prerequisite).
    """
    special = special_files(patch.diff)
    if special:  # never followed, so never created: the checks read the patched tree
        named = ", ".join(f"{printable(p)} ({what})" for p, what in special[:5])
        return _error(f"the patch creates {named}: refused; xen-verify does not create "
                      "or follow links a patch makes")
    g = _Git(co.path)
    hunks = parse_hunks(patch.diff)
    defined = series_defines(hunks) if defined is None else defined
    files = g.out("ls-files").splitlines()
    moved = _relocate(patch, co.path, hunks, files)
    diff = _rewrite_paths(patch.diff, moved)
    diff_file = scratch / "patch.diff"
    diff_file.write_text(diff)
    moved_t = tuple(moved.items())
    tree_paths = [moved.get(f, f) for f in _paths(patch)]
    moved_note = "".join(f"; {a} is now {b}" for a, b in moved.items())

    fwd = _git_apply(g, diff_file, "--check")
    rev = None if fwd.returncode == 0 else _git_apply(g, diff_file, "--check", "--reverse")

    # History first: a marker, the commit itself or its patch-id on the ref decides, and
    # a revert after it means the change is gone again.
    hist_found = _History(None, None)
    base = None
    if co.source.has_history:
        hist = history.Git(co.source.git_dir)
        base = _patch_base(patch, hist)
        if progress:
            progress("looking for the change in the ref's history")
        hist_found = _history(patch, diff, hist, co.commit, tree_paths, base)
    reverted = (hist_found.reverted,) if hist_found.reverted else ()
    rev_note = _reverted_note(hist_found.reverted) if hist_found.reverted else ""
    m = hist_found.match
    strong = m is not None and m.how in STRONG
    if m is not None and (strong or fwd.returncode) and not (rev and rev.returncode == 0):
        if m.how != "commit":  # the commit itself left nothing out
            m = replace(m, left_out=_left_out(g, hunks, moved, diff_file))
        how = ("already applied: its commit is on the ref" if m.how == "commit"
               else "already applied in another form")
        note = _partial_note(m, len(hunks))
        if len(m.left_out) == len(hunks):  # the backport did it all another way
            note = "; every hunk would still apply: the backport made the change another way"
        return ApplyResult(ApplyStatus.ALREADY_APPLIED, f"{how}{_named(m)}{note}",
                           matches=(m,), moved_files=moved_t)
    if rev is not None and rev.returncode == 0:
        match = Match(how="reverse-apply")
        if m is not None:
            match = replace(m, how=f"reverse-apply; {m.how}")
        return ApplyResult(ApplyStatus.ALREADY_APPLIED,
                           "already applied: the patch reverse-applies" + _named(match),
                           matches=(match,), moved_files=moved_t)

    unknown_note = ""

    def prerequisites(how: str) -> ApplyResult | None:
        nonlocal unknown_note
        pre = _prerequisites(patch, hunks, co, moved, defined, base, progress)
        if pre and not co.source.has_history:
            # Without history a name the tree lacks may be a prerequisite or the patch's
            # own mistake: say so, apply, and let the build check tell.
            names = ", ".join(p.symbol for p in pre[:8]) + (" ..." if len(pre) > 8 else "")
            unknown_note = (f"; uses {names}, which this tree lacks (no history here to name "
                            "a prerequisite; the BUILD check judges)")
            return None
        return _prerequisite_result(pre, moved_t, how, rev_note) if pre else None

    if fwd.returncode == 0:
        # It applies as text; whether what it calls exists on the ref is another question.
        pre = prerequisites("it applies, but")
        hr = _hunk_results(hunks, fwd.stdout + fwd.stderr, moved, rejected_ok=True)
        if pre is not None:  # applied all the same: BUILD shows what the ref lacks
            anyway = g.run("apply", "--index", str(diff_file)).returncode == 0
            return replace(pre, reverted=reverted, hunks=tuple(hr), applied_anyway=anyway)
        applied = g.run("apply", "--index", str(diff_file))
        if applied.returncode:
            return _error(f"git apply --check passed but apply failed: {_last(applied.stderr)}")
        offsets = [h for h in hr if h.offset]
        if offsets:
            detail = ", ".join(f"{h.target_file or h.file} hunk #{h.index} {h.offset:+d}"
                               for h in offsets)
            return ApplyResult(ApplyStatus.OFFSETS,
                               f"applies with offsets: {detail}{moved_note}{rev_note}"
                               f"{unknown_note}",
                               hunks=tuple(hr), moved_files=moved_t, reverted=reverted)
        return ApplyResult(ApplyStatus.CLEAN,
                           f"applies cleanly{moved_note}{rev_note}{unknown_note}",
                           hunks=tuple(hr), moved_files=moved_t, reverted=reverted)

    three = _git_apply(g, diff_file, "--3way", "--index")
    if three.returncode == 0 and g.run("diff", "--cached", "--quiet", "HEAD").returncode == 0:
        reset_worktree(g.cwd)  # merged to nothing new: the change is there, merge-equivalent
        return ApplyResult(ApplyStatus.ALREADY_APPLIED,
                           "already applied: a 3-way merge of it changes nothing",
                           matches=(Match(how="three-way merge adds nothing"),),
                           moved_files=moved_t)
    if three.returncode == 0:
        reset_worktree(g.cwd)
        if (pre := prerequisites("it merges, but")) is not None:
            return replace(pre, reverted=reverted)
        three = _git_apply(g, diff_file, "--3way", "--index")
        hr = _hunk_results(hunks, three.stdout + three.stderr, moved, rejected_ok=True)
        return ApplyResult(ApplyStatus.THREE_WAY,
                           f"applies with a 3-way merge{moved_note}{rev_note}{unknown_note}",
                           hunks=tuple(replace(h, status="three-way") for h in hr),
                           moved_files=moved_t, reverted=reverted)
    reset_worktree(g.cwd)

    if not co.source.has_history:  # with history, history has answered this already
        present = lines_present(hunks, co.path, moved)
        if present:
            where = ", ".join(present.locations[:4])
            n = len(_distinct_added(hunks))
            return ApplyResult(
                ApplyStatus.ALREADY_APPLIED,
                f"already applied in another form: {round(present.score * n)}/{n} of its "
                f"distinctive added lines are in the tree ({where})",
                matches=(present,), moved_files=moved_t)

    if (pre := prerequisites("it does not apply, and")) is not None:
        return replace(pre, reverted=reverted)

    rej = _git_apply(g, diff_file, "--reject")
    hr = _hunk_results(hunks, rej.stdout + rej.stderr, moved, rejected_ok=False)
    reset_worktree(g.cwd)
    failed = [h for h in hr if h.status == "failed"]
    where = ", ".join(f"{printable(h.target_file or h.file)} hunk #{h.index} (expected at line "
                      f"{h.expected_line})" for h in failed[:MAX_NAMED]) or _last(fwd.stderr)
    if len(failed) > MAX_NAMED:  # the detail is one line: name a few, count the rest
        where += f" and {len(failed) - MAX_NAMED} more hunks"
    return ApplyResult(ApplyStatus.CONFLICT, f"conflict: {where}{moved_note}{rev_note}",
                       hunks=tuple(hr), moved_files=moved_t, reverted=reverted)


def _paths(patch: Patch) -> list[str]:
    return sorted({p for fc in patch.files for p in (fc.old_path, fc.new_path) if p})


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
    defined = series_defines(h for p in series.patches for h in parse_hunks(p.diff))
    with tempfile.TemporaryDirectory(prefix="xen-verify-apply-") as scratch:
        for patch in series.patches:
            try:
                r = apply_patch(patch, co, Path(scratch), progress, defined=defined)
            except OSError as e:
                r = _error(f"cannot apply: {e}")
            results.append(r)
            if r.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS, ApplyStatus.THREE_WAY) \
                    or r.applied_anyway:
                head = commit_worktree(co.path, patch.meta.subject)
            if r.status not in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS, ApplyStatus.THREE_WAY,
                                ApplyStatus.ALREADY_APPLIED):
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
    applied = worst.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS, ApplyStatus.THREE_WAY) \
        or worst.applied_anyway
    return replace(worst, written_against=written, base_matches=matches_base,
                   patched_commit=head if applied else None)
