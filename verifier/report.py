"""Reports: ``report.json``, ``report.md``, ``junit.xml`` and the terminal summary.

Every renderer takes the :class:`verifier.model.Report` the pipeline returns and
nothing else, so what the terminal, the mail and CI say is always the same story.

``report.json`` is an interface other programs read: its keys are listed in
``SCHEMA_TABLE`` below (the README's "report.json" section is that table). A key that
changes meaning or goes away changes ``SCHEMA``; keys may be added without it.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shlex
import tempfile
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.model import (
    ApplyResult,
    ApplyStatus,
    CheckResult,
    HunkResult,
    Outcome,
    Patch,
    Report,
    RunResult,
    Verdict,
    VerifyError,
    to_jsonable,
)

if TYPE_CHECKING:
    from rich.console import Console

SCHEMA = 2
SCHEMA_TABLE = """\
| key | value |
| --- | --- |
| `schema` | `2` |
| `tool` | `{name: "xen-verify", version, command}`; `command` reproduces the report |
| `patch.subject` | the patch's subject; a series: the first one's, `(+N more)` |
| `patch.source`, `.kind` | the first patch's input as given; `diff`, `format-patch`, `mbox`, `patchwork` or `git` |
| `patch.author`, `.date`, `.message_id` | as the patch says, or `null` |
| `patch.version` | `2` for `[PATCH v2]`; `null` when the subject does not say |
| `patch.trailers` | `[[key, value], ...]` in order (`Signed-off-by`, `Acked-by`, ...) |
| `patch.base_commit` | the `base-commit:` trailer, or `null` |
| `patch.patches[]` | per series member: the fields above and `number`, `total`, `commit` (`git:REV`), `comments` (`[[author, date]]` of a patchwork thread), `files` (`[{path, old_path, new_path, hunks, added, removed}]`), `functions` (hunk-header function names) |
| `verdict` | overall: `pass`, `fail`, `not-applicable` or `error` |
| `runs[]` | one per ref checked, in the order given |
| `runs[].ref` | the ref exactly as written on the command line |
| `runs[].commit`, `.subject` | the full sha it resolved to, and that commit's subject |
| `runs[].tree` | the tree it came from (`Debian bookworm xen 4.17.5+72-g01140da4e8-1`) |
| `runs[].apply.status` | `clean`, `offsets`, `three-way`, `conflict`, `already-applied`, `missing-prerequisite` or `error` |
| `runs[].apply.detail` | one line saying how it went |
| `runs[].apply.hunks[]` | `{file, index, header, expected_line, applied_line, offset, status, target_file}`; `status`: `ok`, `offset`, `three-way` or `failed` |
| `runs[].apply.matches[]` | why it is already applied: `{how, commit, subject, upstream_commit, locations, score, reverted_by, reverted_subject, left_out}`; `locations` are `file:first-last`; `left_out`: the hunks a partial backport left out (`file #n @@ ... @@`); `reverted_by` is `null` here |
| `runs[].apply.reverted[]` | equivalent commits found on the ref that a later commit reverted (the change is not there): as `matches[]`, with `reverted_by`, `reverted_subject` naming the revert |
| `runs[].apply.prerequisites[]` | `{symbol, used_in, used_at, introduced_by, introduced_subject}`; `used_at`: the added lines using it (`file:line`, new side) |
| `runs[].apply.moved_files` | `[[path in the patch, path in the tree], ...]` |
| `runs[].apply.patches` | series only: `[[subject, status, detail], ...]` per member |
| `runs[].apply.written_against` | the base the patch names (`base-commit ...`, `index blobs ...`), or `null` |
| `runs[].apply.base_matches` | whether the ref is that base: `true`, `false`, `null` (unknown) |
| `runs[].apply.patched_commit` | the commit holding the patched tree, or `null` |
| `runs[].checks[]` | one per property checked |
| `runs[].checks[].pack` | the check pack that ran it (`m2p-strict`), or `generic` |
| `runs[].checks[].id`, `.title` | `P1` ... `P9` (m2p-strict), `BUILD` (generic), and what the property says |
| `runs[].checks[].base`, `.patched` | `pass`, `fail`, `error` (the tool could not judge: the detail says why, e.g. the unmodelled callee or the compiler's first error), `accepted` (the property does not hold in a way the pack accepts; the detail gives the reason) or `n/a`: before the patch and with it (already-applied: the tree as it is) |
| `runs[].checks[].change` | `REGRESSION` (pass -> fail), `fixed` (fail -> pass), `fails as on base`, `fail`, `pass`, `accepted deviation`, `error`, `n/a` |
| `runs[].checks[].detail` | one line |
| `runs[].checks[].evidence` | `null` or `{trace, state, locations, output, replay}`: the shortest failing trace (operations in order), the state that went wrong, tree `file:line`s, harness output, and the harness commands that replay it (`xen-verify harness` writes them for `make run`); BUILD: the compiler's messages (`file:line: error/warning: ...`), their locations, the compiler's output |
| `runs[].checks[].findings[]` | `{title, text, table}`; `table` is a list of rows, the first the header (P4: pages walked) |
| `runs[].verdict` | this ref's verdict (values as `verdict`) |
| `runs[].notes[]` | remarks: why no check ran, what the tree lacks |
| `runs[].limits[]` | per pack that ran, and `generic` where BALANCE explored a function: `{pack, verbatim, modelled, parameters, not_exercised}`, each a list of lines: the tree code that ran as written, what stood in for the hypervisor, the sizes and constants used, what the checks cannot see |
| `runs[].functions[]` | generic BALANCE, per function the patch touches: `{name, file, lifted, reason, paths: {base, patched}, violations: {base: [...], patched: [...]}, change}`; `lifted` false says why in `reason`; `paths` counts the paths explored (`null`: that side did not run); `change`: `fixed`, `REGRESSION`, `fails as on base`, `pass`, `fail` (already applied), `n/a` (removed by the patch) or `error` |
| `runs[].functions[].violations.base[]`, `.patched[]` | `{kind, resource, rc, choices, acquired_at, returned_at, replay}`: `kind` `leak`, `double-acquire`, `release-unheld`, `bug`, `crash`, `sanitizer` or `hang`; `resource` the model's name and the acquiring function; `rc` the return value and its class; `choices` the stub answers that reach the path (`callee@file:line -> value`); `acquired_at`, `returned_at` tree `file:line`s; `replay` a script that replays the path against the built harness (its folder's `Makefile` rebuilds it) |
"""  # noqa: E501  (Markdown table rows: one per key)
TOOL = "xen-verify"
WIDTH = 78  # prose in report.md is wrapped here: mails are read as plain text
SHORT = 10  # short sha length in the markdown table
MAIL_WIDTH = 80  # report.md's tables fit here where the content allows
MAIL_LINES = 150  # report.md longer than this leaves finding tables to report.html/json

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
JUNIT_XML = "junit.xml"


def tool_version() -> str:
    try:
        from verifier import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the package always defines it
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(TOOL)
        except PackageNotFoundError:
            return "unknown"


# --------------------------------------------------------------------------- report.json


def _patch_json(patch: Patch) -> dict[str, Any]:
    meta = to_jsonable(patch.meta)
    meta["files"] = [
        {
            "path": fc.path,
            "old_path": fc.old_path,
            "new_path": fc.new_path,
            "hunks": fc.hunks,
            "added": fc.added,
            "removed": fc.removed,
        }
        for fc in patch.files
    ]
    try:
        meta["functions"] = list(patch.functions)
    except Exception:  # a diff the parser cannot read still gets reported
        meta["functions"] = []
    return meta


def _apply_json(a: ApplyResult) -> dict[str, Any]:
    return {
        "status": str(a.status),
        "detail": a.detail,
        "hunks": to_jsonable(a.hunks),
        "matches": to_jsonable(a.matches),
        "prerequisites": to_jsonable(a.prerequisites),
        "moved_files": to_jsonable(a.moved_files),
        "patches": to_jsonable(a.patches),
        "written_against": a.written_against,
        "base_matches": a.base_matches,
        "patched_commit": a.patched_commit,
        "reverted": to_jsonable(a.reverted),
    }


def _check_json(c: CheckResult) -> dict[str, Any]:
    return {
        "pack": c.pack,
        "id": c.id,
        "title": c.title,
        "base": str(c.base),
        "patched": str(c.patched),
        "change": c.change,
        "detail": c.detail,
        "evidence": to_jsonable(c.evidence) if c.evidence is not None else None,
        "findings": to_jsonable(c.findings),
    }


def _run_json(r: RunResult) -> dict[str, Any]:
    return {
        "ref": r.ref,
        "commit": r.commit,
        "subject": r.subject,
        "tree": r.tree,
        "apply": _apply_json(r.apply),
        "checks": [_check_json(c) for c in r.checks],
        "verdict": str(r.verdict),
        "notes": list(r.notes),
        "limits": to_jsonable(r.limits),
        "functions": [_function_json(f) for f in r.functions],
    }


def _function_json(f: Any) -> dict[str, Any]:
    return {
        "name": f.name,
        "file": f.file,
        "lifted": f.lifted,
        "reason": f.reason,
        "paths": {"base": f.paths.base, "patched": f.paths.patched},
        "violations": {"base": to_jsonable(f.violations.base),
                       "patched": to_jsonable(f.violations.patched)},
        "change": f.change,
    }


def report_json(report: Report) -> dict[str, Any]:
    """The report as JSON values; see the module docstring for every key."""
    patches = report.series.patches
    first = patches[0].meta if patches else None
    return {
        "schema": SCHEMA,
        "tool": {"name": TOOL, "version": tool_version(), "command": report.command},
        "patch": {
            "subject": report.series.subject if patches else "",
            "source": first.source if first else "",
            "kind": first.kind if first else "",
            "author": first.author if first else None,
            "date": first.date if first else None,
            "message_id": first.message_id if first else None,
            "version": first.version if first else None,
            "trailers": [list(t) for t in first.trailers] if first else [],
            "base_commit": first.base_commit if first else None,
            "patches": [_patch_json(p) for p in patches],
        },
        "verdict": str(report.verdict),
        "runs": [_run_json(r) for r in report.runs],
    }


# --------------------------------------------------------------------------- shared helpers


def _check_ids(runs: Iterable[RunResult]) -> list[str]:
    """Check ids present in any run, P1 < P2 < P10."""
    ids = {c.id for r in runs for c in r.checks}

    def key(i: str) -> tuple[str, int, str]:
        m = re.fullmatch(r"(\D*)(\d+)(.*)", i)
        return (m.group(1), int(m.group(2)), m.group(3)) if m else (i, 0, "")

    return sorted(ids, key=key)


def _labels(runs: Sequence[RunResult]) -> list[str]:
    """The ref as written; a ref given for two trees also names its tree (or commit)."""
    refs = [r.ref for r in runs]
    out = []
    for r in runs:
        if refs.count(r.ref) > 1:
            out.append(f"{r.ref} [{r.tree or _short(r.commit)}]")
        else:
            out.append(r.ref)
    return out


def _short(sha: str | None) -> str:
    return (sha or "")[:SHORT] or "-"


def _counts(verdicts: Iterable[Verdict]) -> dict[Verdict, int]:
    counts = {v: 0 for v in Verdict}
    for v in verdicts:
        counts[v] += 1
    return counts


def _verdict_word(v: Verdict) -> str:
    return {Verdict.NOT_APPLICABLE: "not applicable"}.get(v, str(v))


def summary_line(report: Report) -> str:
    """``xen-verify: PASS on 3 of 4 refs (1 not applicable)``."""
    runs = report.runs
    v = report.verdict
    if not runs:
        return f"{TOOL}: {str(v).upper()}: no ref was checked"
    counts = _counts(r.verdict for r in runs)
    others = [
        f"{counts[o]} {_verdict_word(o)}"
        for o in (Verdict.FAIL, Verdict.ERROR, Verdict.PASS, Verdict.NOT_APPLICABLE)
        if o is not v and counts[o]
    ]
    line = f"{TOOL}: {str(v).upper()} on {counts[v]} of {len(runs)} refs"
    if others:
        line += f" ({', '.join(others)})"
    regressions = sum(c.change == "REGRESSION" for r in runs for c in r.checks)
    if regressions:
        line += f"; {regressions} regression{'s' if regressions > 1 else ''}"
    return line


# Table cells for a check: short, so that nine checks still fit a mail.
CELL = {
    "pass": "ok",
    "fixed": "FIX",
    "REGRESSION": "REGR",
    "fails as on base": "fail",
    "fail": "FAIL",
    "error": "err",
    "n/a": "n/a",
    "accepted deviation": "dev",
}
CELL_LEGEND = {
    "ok": "passes",
    "FIX": "fails on the base, passes with the patch",
    "REGR": "passes on the base, FAILS with the patch (regression)",
    "fail": "fails on the base and with the patch",
    "FAIL": "fails with the patch",
    "err": "the tool could not judge (see why below)",
    "dev": "does not hold, in a way the check pack accepts (reason below)",
    "n/a": "does not apply here",
    "-": "not run",
}


def _cell(c: CheckResult | None) -> str:
    if c is None:
        return "-"
    return CELL.get(c.change, c.change)


def _failing(c: CheckResult) -> bool:
    return c.patched in (Outcome.FAIL, Outcome.ERROR)


# --------------------------------------------------------------------------- report.md


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    """Wrap prose at WIDTH; paths and other long words are never split."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        if not para.strip():
            lines.append("")
            continue
        lines.extend(
            textwrap.wrap(
                para,
                width=WIDTH,
                initial_indent=first if first is not None and not lines else indent,
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return lines


def _cell_text(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table with aligned columns (it is read as plain text too)."""
    if not rows:
        return []
    cells = [[_cell_text(str(c)) for c in row] for row in rows]
    ncol = max(len(r) for r in cells)
    cells = [r + [""] * (ncol - len(r)) for r in cells]
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(ncol)]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [line(cells[0]), "| " + " | ".join("-" * w for w in widths) + " |"]
    out.extend(line(r) for r in cells[1:])
    return [ln.rstrip() for ln in out]


def _checks_cell(r: RunResult) -> str:
    """``REGRESSION P3, fixed P1, pass P2,P4-P9``: every check id, by what it did."""
    if not r.checks:
        return "-"
    order = ["REGRESSION", "error", "fails as on base", "fail", "fixed", "accepted", "pass",
             "n/a"]
    groups: dict[str, list[str]] = {}
    for c in r.checks:
        key = ("error" if c.patched is Outcome.ERROR else
               "accepted" if c.patched is Outcome.ACCEPTED else c.change)
        groups.setdefault(key, []).append(c.id)
    keys = sorted(groups, key=lambda k: order.index(k) if k in order else len(order))
    return ", ".join(f"{k} {id_ranges(_sorted_ids(groups[k]))}" for k in keys)


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    def key(i: str) -> tuple[str, int, str]:
        m = re.fullmatch(r"(\D*)(\d+)(.*)", i)
        return (m.group(1), int(m.group(2)), m.group(3)) if m else (i, 0, "")

    return sorted(set(ids), key=key)


def _ref_tables(report: Report, labels: list[str], packed: bool = False, tail: str = ""
                ) -> list[str]:
    """The summary table: one row per ref. Every check's outcome in one cell when that
    fits a mail; else the checks get a matrix of their own, keyed by ref."""
    ids = _check_ids(report.runs)
    rows = []  # [ref, commit, apply], [check cells], verdict
    for label, r in zip(labels, report.runs, strict=True):
        by_id = {c.id: c for c in r.checks}
        verdict = "n/a" if r.verdict is Verdict.NOT_APPLICABLE else str(r.verdict).upper()
        rows.append(([label, _short(r.commit), str(r.apply.status)],
                     [_cell(by_id.get(i)) for i in ids], verdict))
    head = ["ref", "commit", "apply"]
    short = _table([[*head, "verdict"], *[[*b, v] for b, _, v in rows]])
    out: list[str] = []
    if not ids:
        out += short
        out.append("")
        out += _wrap(_no_checks_reason(report) + (" " + tail if tail else ""))
        return out
    cells = [_checks_cell(r) for r in report.runs]
    compact = _table([[*head, "checks", "verdict"],
                      *[[*b, c, v] for (b, _, v), c in zip(rows, cells, strict=True)]])
    if max(len(ln) for ln in compact) > MAIL_WIDTH:  # the commit is in the appendix too
        compact = _table([["ref", "apply", "checks", "verdict"],
                          *[[b[0], b[2], c, v] for (b, _, v), c in zip(rows, cells, strict=True)]])
    one = _table([[*head, *ids, "verdict"], *[[*b, *c, v] for b, c, v in rows]])
    legend = ""
    if max(len(ln) for ln in compact) <= MAIL_WIDTH:
        out += compact
    else:
        # packed: a ref that ran no check keeps its row (and its reason) in the first table
        shown = [row for row, r in zip(rows, report.runs, strict=True)
                 if r.checks or not packed]
        if max(len(ln) for ln in one) <= MAIL_WIDTH:
            out += one
            shown = rows  # every row printed: the legend covers its cells
        else:  # too wide for a mail: the checks get a table of their own, keyed by ref
            out += short
            out.append("")
            out += _check_matrix(ids, [(b[0], c) for b, c, _ in shown])
        used = {cell for _, row, _ in shown for cell in row}
        legend = "; ".join(f"{k} {v}" for k, v in CELL_LEGEND.items() if k in used) + "."
    titles: dict[str, str] = {}
    for r in report.runs:
        for c in r.checks:
            titles.setdefault(c.id, c.title)
    out.append("")
    if packed:  # one paragraph: the cells' legend, then "Checks: P1 title; P2 title; ..."
        return out + _wrap((legend + " " if legend else "") + "Checks: "
                           + "; ".join(f"{i} {titles[i]}" for i in ids) + "."
                           + (" " + tail if tail else ""))
    if legend:
        out += _wrap(legend)
        out.append("")
    width = max(len(i) for i in ids)
    for i in ids:
        out += _wrap(titles[i], indent=" " * (width + 3), first=f"- {i.ljust(width)} ")
    return out


def _check_matrix(ids: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    """ref x check outcomes. Still too wide for a mail: the checks whose column is the
    same on every ref share one, headed by their ids (``P2,P4,P5,P7-P9``)."""
    table = _table([["ref", *ids], *[[ref, *cells] for ref, cells in rows]])
    if max(len(ln) for ln in table) <= MAIL_WIDTH or len(ids) < 2:
        return table
    columns: dict[tuple[str, ...], list[str]] = {}
    for n, i in enumerate(ids):
        columns.setdefault(tuple(cells[n] for _, cells in rows), []).append(i)
    heads = [id_ranges(_sorted_ids(group)) for group in columns.values()]
    body = [[ref, *(col[k] for col in columns)] for k, (ref, _) in enumerate(rows)]
    return _table([["ref", *heads], *body])


def _no_checks_reason(report: Report) -> str:
    if "--no-checks" in report.command.split():
        return "No checks were run (--no-checks)."
    funcs: list[str] = []
    for p in report.series.patches:
        with contextlib.suppress(Exception):  # an unreadable diff still gets its report
            funcs += [f for f in p.functions if f not in funcs]
    notes = sorted({n for r in report.runs for n in r.notes if "check" in n.lower()})
    text = "No check pack applies to this patch"
    if funcs:
        text += f" (functions touched: {', '.join(funcs)})"
    text += ": only how it applies is reported."
    if notes:
        text += " " + " ".join(n.rstrip(".") + "." for n in notes)
    return text


def _hunk_line(h: HunkResult) -> str:
    path = h.target_file or h.file
    ctx = h.header.split("@@")[-1].strip() if h.header.count("@@") >= 2 else ""
    where = f"{path} hunk #{h.index}" + (f" ({_func_name(ctx)})" if ctx else "")
    if h.status == "failed":
        return f"{where}: FAILS, expected at line {h.expected_line}"
    if h.status == "three-way":
        at = f" at line {h.applied_line}" if h.applied_line else ""
        return f"{where}: merged three-way{at}"
    if h.offset:
        return f"{where}: line {h.expected_line} -> {h.applied_line} (offset {h.offset:+d})"
    return f"{where}: applies at line {h.applied_line or h.expected_line}"


def _func_name(ctx: str) -> str:
    m = re.search(r"(\w+)\s*\(", ctx)
    return m.group(1) if m else ctx[:40]


def _names_hunk(detail: str, h: HunkResult) -> bool:
    """Whether the apply detail names this hunk (``xen/arch/x86/mm.c hunk #1 +8``): by
    its path, or its bare file name, and never hunk #12 for #1."""
    names = {h.target_file or h.file, h.file, (h.target_file or h.file).rsplit("/", 1)[-1]}
    return any(re.search(rf"(?:^|[\s,(:]){re.escape(n)} hunk #{h.index}(?!\d)", detail)
               for n in names)


def _apply_lines(a: ApplyResult, brief: bool = False) -> list[str]:
    """How the patch applied: the status and detail, then what they rest on (with
    ``brief``, what the detail line already names is left to report.html)."""
    out = _wrap(f"Apply: {a.status} - {a.detail}", indent="  ")
    if a.patches:
        for n, (subj, status, detail) in enumerate(a.patches, 1):
            out += _wrap(f"{n}/{len(a.patches)} {subj}: {status}"
                         + (f" - {detail}" if status not in ("clean",) else ""),
                         indent="      ", first="  - ")
    for src, dst in a.moved_files:
        out += _wrap(f"moved: {src} is now {dst}", indent="    ", first="  - ")
    for h in a.hunks:  # the hunks that applied where the patch says go without saying
        if brief and _names_hunk(a.detail, h):
            continue  # the detail names it (and its offset)
        if h.status != "ok" or h.offset:
            out += _wrap(_hunk_line(h), indent="    ", first="  - ")
    for m in a.matches:
        if (m.commit and m.commit[:12] in a.detail and m.score is None and not m.locations
                and not m.left_out and (not m.upstream_commit
                                        or m.upstream_commit[:12] in a.detail)):
            continue  # the detail line has said all of it
        text = f"already there ({m.how})"
        if m.commit:
            text += f": {m.commit[:12]}"
            if m.subject:
                text += f' "{m.subject}"'
        if m.upstream_commit:
            text += f", upstream commit {m.upstream_commit[:12]}"
        if m.score is not None:
            text += f", {round(m.score * 100)}% of its distinctive added lines"
        if m.locations:
            text += f", at {', '.join(m.locations)}"
        if m.left_out:
            text += f"; a partial backport, left out: {', '.join(m.left_out)}"
        out += _wrap(text, indent="    ", first="  - ")
    for m in a.reverted:
        text = f"reverted: {_short(m.commit)}"
        text += f' "{m.subject}"' if m.subject else ""
        text += f" (upstream {_short(m.upstream_commit)})" if m.upstream_commit else ""
        text += f" was reverted by {_short(m.reverted_by)}"
        text += f' "{m.reverted_subject}"' if m.reverted_subject else ""
        out += _wrap(text, indent="    ", first="  - ")
    # One line per introducing commit: a prerequisite commit usually brings several names.
    by_commit: dict[tuple[str | None, str | None], list[str]] = {}
    for p in a.prerequisites:
        used = f"used at {', '.join(p.used_at)}" if p.used_at else f"used in {p.used_in}"
        by_commit.setdefault((p.introduced_by, p.introduced_subject), []).append(
            f"{p.symbol} ({used})")
    for (introduced_by, introduced_subject), uses in by_commit.items():
        symbols = [p.symbol for p in a.prerequisites
                   if (p.introduced_by, p.introduced_subject) == (introduced_by,
                                                                   introduced_subject)]
        if brief and introduced_by and introduced_by[:10] in a.detail and all(
                re.search(rf"\b{re.escape(x)}\b", a.detail) for x in symbols):
            continue  # the detail names the commit and every symbol
        text = f"missing: {', '.join(uses)}"
        if introduced_by:
            text += f", introduced by {introduced_by[:12]}"
            if introduced_subject:
                text += f' "{introduced_subject}"'
        else:
            text += ", introducing commit unknown"
        out += _wrap(text, indent="    ", first="  - ")
    if a.written_against:
        is_base = {True: "this ref is that base", False: "this ref is NOT that base",
                   None: "whether this ref is that base is unknown"}[a.base_matches]
        out += _wrap(f"written against {a.written_against}: {is_base}",
                     indent="    ", first="  - ")
    return out


def _evidence_lines(c: CheckResult) -> list[str]:
    out: list[str] = []
    ev = c.evidence
    if ev is None:
        return out
    if ev.trace:
        out += ["", "  Trace:", ""]
        width = len(str(len(ev.trace)))
        out += [f"      {str(n).rjust(width)}. {op}" for n, op in enumerate(ev.trace, 1)]
    if ev.state:
        out.append("")
        out += _wrap(f"State: {ev.state}", indent="    ", first="  ")
    if ev.locations:
        out.append("")
        out += _wrap(f"At: {', '.join(ev.locations)}", indent="    ", first="  ")
    if ev.output:
        lines = ev.output.strip("\n").splitlines()
        if len(lines) > 20:
            lines = [*lines[:20], f"[... {len(lines) - 20} more lines]"]
        out += ["", "  Output:", ""] + [f"      {ln}" for ln in lines]
    return out


def _kind(c: CheckResult) -> str:
    return "ERROR" if c.patched is Outcome.ERROR else c.change


def _refs_text(labels: Sequence[str], total: int) -> str:
    """``be05b5385f^, stable-4.6 and master``; ``all 4 refs`` when it is every one."""
    if len(labels) == total and total > 2:
        return f"all {total} refs"
    if len(labels) == 1:
        return labels[0]
    return ", ".join(labels[:-1]) + " and " + labels[-1]


def _group(items: Iterable[tuple[str, Any, Any]]) -> list[tuple[Any, list[str]]]:
    """(label, key, value) -> [(value, [labels])] per distinct key, in first-seen order."""
    groups: dict[Any, tuple[Any, list[str]]] = {}
    for label, key, value in items:
        entry = groups.setdefault(key, (value, []))
        if label not in entry[1]:
            entry[1].append(label)
    return list(groups.values())


def _failure_key(c: CheckResult) -> tuple[Any, ...]:
    return (c.id, _kind(c), c.title, c.base, c.patched, c.detail, c.evidence)


def _failure_blocks(items: list[tuple[str, RunResult, CheckResult]], total: int) -> list[str]:
    """One block per distinct failure, naming every ref it happened on; checks that
    failed alike on the same refs with nothing to show but the detail share a block."""
    grouped = _group((lb, _failure_key(c), c) for lb, _r, c in items)
    out: list[str] = []
    i = 0
    while i < len(grouped):
        c, labels = grouped[i]
        same = [c]
        while (i + len(same) < len(grouped) and grouped[i + len(same)][1] == labels
               and _alike(c, grouped[i + len(same)][0])):
            same.append(grouped[i + len(same)][0])
        i += len(same)
        ids = id_ranges([x.id for x in same])
        out += _wrap(f"#### {_kind(c)}: {ids} on {_refs_text(labels, total)}", indent="     ",
                     first="")
        out.append("")
        if len(same) == 1:  # several: their titles are listed under the table
            out += _wrap(c.title, indent="  ", first="  ")
        out.append(f"  base: {c.base}, patched: {c.patched}")
        if c.detail:
            out += _wrap(c.detail, indent="  ", first="  ")
        out += _evidence_lines(c)
        out.append("")
    return out


def _brief_lines(items: list[tuple[str, RunResult, CheckResult]], total: int,
                 pointer: bool = True) -> list[str]:
    """Checks that deviate in a way their pack accepts, in short: a bullet per check, its
    detail once per distinct text (a near-identical one as its word changes), the
    traces left to report.html and report.json."""
    out: list[str] = []
    by_check = _group((lb, (c.id, c.title, c.base, c.patched), c) for lb, _r, c in items)
    for c, _ in by_check:
        variants = _group((lb, x.detail, x) for lb, _r, x in items
                          if (x.id, x.title, x.base, x.patched) == (c.id, c.title, c.base,
                                                                    c.patched))
        out += _wrap(f"- {c.id} {c.title} (base: {c.base}, patched: {c.patched})",
                     indent="  ", first="")
        for n, (x, refs) in enumerate(variants):
            changes = _as_changes(variants[0][0].detail, x.detail) if n else None
            text = (f"On {_refs_text(refs, total)}: "
                    + (f"as on {_refs_text(variants[0][1], total)}, with {changes}."
                       if changes else x.detail))
            out += _wrap(text, indent="    ", first="  - ")
    if pointer:
        out += _wrap("Their traces are in report.html and report.json.")
    out.append("")
    return out


def _alike(a: CheckResult, b: CheckResult) -> bool:
    """Failed the same way and nothing to show but the detail: one block says it all."""
    return (a.evidence is None and b.evidence is None and _kind(a) == _kind(b)
            and (a.base, a.patched, a.detail) == (b.base, b.patched, b.detail))


def id_ranges(ids: Sequence[str]) -> str:
    """``P1,P2,P3,P5`` -> ``P1-P3,P5``."""
    parts: list[list[str]] = []
    prev: tuple[str, int] | None = None
    for i in ids:
        m = re.fullmatch(r"(\D*)(\d+)", i)
        cur = (m.group(1), int(m.group(2))) if m else None
        if cur and prev and parts and cur[0] == prev[0] and cur[1] == prev[1] + 1:
            parts[-1][1:] = [i]
        else:
            parts.append([i])
        prev = cur
    return ",".join(p[0] if len(p) == 1 else f"{p[0]}-{p[1]}" for p in parts)


# --------------------------------------------------------------------------- tables for a mail


def _drop_empty_columns(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    """Columns with a header and no value in any row say nothing."""
    rows = [list(r) for r in rows]
    ncol = max(len(r) for r in rows)
    rows = [r + [""] * (ncol - len(r)) for r in rows]
    keep = [i for i in range(ncol) if any(str(r[i]).strip() for r in rows[1:])]
    return [[r[i] for i in keep] for r in rows]


def _pivot(rows: list[list[str]]) -> tuple[list[list[str]], str] | None:
    """A table whose first column names revisions, each with the same rows: one row per
    case and one column per revision, the measured columns joined by '/' in each cell.

    Returns the new table and the line saying what a cell holds, or None when the table
    is not of that shape. Nothing is dropped: every cell of the input is in the output.
    """
    if len(rows) < 3:
        return None
    header, body = rows[0], rows[1:]
    blocks: dict[str, list[list[str]]] = {}
    for r in body:
        blocks.setdefault(r[0], []).append(r[1:])
    if len(blocks) < 2 or len({len(b) for b in blocks.values()}) != 1:
        return None
    cases = list(blocks.values())
    ncol = len(header) - 1
    # The key: the leading columns that are the same, row by row, in every revision.
    nkey = 0
    while nkey < ncol and all(b[i][nkey] == cases[0][i][nkey]
                              for b in cases for i in range(len(b))):
        nkey += 1
    if nkey == 0 or nkey == ncol:
        return None
    out = [[*header[1:nkey + 1], *blocks]]
    for i, row in enumerate(cases[0]):
        out.append([*row[:nkey], *("/".join(b[i][nkey:]) for b in cases)])
    return out, f"Each {header[0]} cell: {'/'.join(header[nkey + 1:])}."


def _records(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """A table too wide for a mail: one wrapped line per row, cells joined by ' | '."""
    out = _wrap(" | ".join(str(c) for c in rows[0]), indent=indent + "  ",
                first=f"{indent}Columns: ")
    for r in rows[1:]:
        out += _wrap(" | ".join(str(c) for c in r), indent=indent + "    ", first=f"{indent}- ")
    return out


def _mail_table(table: Sequence[Sequence[str]]) -> list[str]:
    """A finding's table in at most MAIL_WIDTH columns: as it is when it fits, else
    pivoted by revision, else one line per row."""
    rows = _drop_empty_columns(table)
    note = ""
    lines = _table(rows)
    if max(len(ln) for ln in lines) > MAIL_WIDTH:
        pivoted = _pivot(rows)
        if pivoted:
            rows, note = pivoted
            lines = _table(rows)
    if max(len(ln) for ln in lines) > MAIL_WIDTH and len(rows) > 3:
        # a column with one value in every row is said once, above the table
        same = [i for i in range(len(rows[0])) if len({r[i] for r in rows[1:]}) == 1]
        if same and len(same) < len(rows[0]):
            note = " ".join([note, *(f"{rows[0][i]}: {rows[1][i]} in every row."
                                     for i in same)]).strip()
            rows = [[c for i, c in enumerate(r) if i not in same] for r in rows]
            lines = _table(rows)
    if max(len(ln) for ln in lines) > MAIL_WIDTH:
        return ([*_wrap(note, indent="  ", first="  ")] if note else []) + _records(rows)
    return ([*_wrap(note, indent="  ", first="  "), ""] if note else []) + lines


# --------------------------------------------------------------------------- report.md


def _as_changes(base: str, text: str) -> str | None:
    """``text`` as a few word changes to ``base`` (``"b" for "a"; ...``), or None when
    it differs too much for that to read better than the text itself."""
    a, b = base.split(), text.split()
    ops = [op for op in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
           if op[0] != "equal"]
    changed = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in ops)
    if not ops or len(ops) > 3 or changed > len(b) // 4:
        return None
    parts = []
    for _, i1, i2, j1, j2 in ops:
        if i1 == i2 or j1 == j2:  # an insertion or deletion: anchor it on a word
            i1, j1 = (i1 - 1, j1 - 1) if i1 > 0 else (i1, j1)
            i2, j2 = (i2, j2) if i1 < i2 and j1 < j2 else (i2 + 1, j2 + 1)
        parts.append(f'"{" ".join(b[j1:j2])}" for "{" ".join(a[i1:i2])}"')
    return "; ".join(parts)


def _finding_lines(report: Report, labels: list[str], tables: bool = True) -> list[str]:
    """A bullet per finding title; under it each distinct text (and table) once, naming
    the refs it holds on. ``tables=False`` leaves the tables to report.html/json."""
    total = len(report.runs)
    found = [(lb, c, f) for lb, r in zip(labels, report.runs, strict=True) for c in r.checks
             for f in c.findings]
    ran = {cid: [lb for lb, r in zip(labels, report.runs, strict=True)
                 if any(c.id == cid for c in r.checks)] for cid in {c.id for _, c, _ in found}}

    def where(cid: str, refs: list[str]) -> str:
        if refs == ran[cid] and len(refs) > 1:
            return "every ref checked"
        return _refs_text(refs, total)

    order = {i: n for n, i in enumerate(_check_ids(report.runs))}
    by_title = _group((lb, (c.id, f.title), (c.id, f.title)) for lb, c, f in found)
    by_title.sort(key=lambda g: order.get(g[0][0], len(order)))
    out: list[str] = []
    for (cid, title), _ in by_title:
        # without tables, findings that differ only in their table read the same
        variants = _group((lb, (f.text, f.table if tables else len(f.table)), f)
                          for lb, c, f in found if (c.id, f.title) == (cid, title))
        one_set = len({tuple(v[1]) for v in variants}) == 1
        head = f"- {cid} {title}" + (f" (on {where(cid, variants[0][1])})" if one_set else "")
        out += _wrap(head, indent="  ", first="")
        for n, (f, refs) in enumerate(variants):
            changes = _as_changes(variants[0][0].text, f.text) if n else None
            if changes:
                first_refs = _refs_text(variants[0][1], total)
                text = (f"On {_refs_text(refs, total)}: as on {first_refs}, with {changes}."
                        if not one_set else f"As above, with {changes}.")
            else:
                text = ("" if one_set else f"On {where(cid, refs)}: ") + f.text
            rows = len(f.table) - 1
            if rows > 0 and not tables:
                text += f" [table: {rows} rows]"
            out += _wrap(text, indent="    ", first="  - ")
            if rows > 0 and tables:
                out.append("")
                out += _mail_table(f.table)
                out.append("")
    return out


def _gist(item: str) -> str:
    """An item's leading clause (``one CPU: no other CPU...`` -> ``one CPU``)."""
    return re.split(r": |; | \(", item, maxsplit=1)[0].strip()


def _limits_lines(report: Report, labels: list[str], full: bool = True) -> list[str]:
    """A line per pack: with ``full``, every item (per distinct set, naming the refs when
    they differ); else what the checks cannot see, in short, the rest left to
    report.html and report.json."""
    total = len(report.runs)
    groups = _group((lb, lim, lim) for lb, r in zip(labels, report.runs, strict=True)
                    for lim in r.limits)
    out: list[str] = []
    if not full:
        for pack in dict.fromkeys(g[0].pack for g in groups):
            unseen = list(dict.fromkeys(_gist(i) for lim, _ in groups if lim.pack == pack
                                        for i in lim.not_exercised))
            text = f"{pack}: " + (f"not exercised: {'; '.join(unseen)}." if unseen
                                  else "nothing stated as not exercised.")
            out += _wrap(text, indent="    ", first="  - ")
        return out + _wrap("What ran verbatim, what was modelled and the parameters: "
                           "report.html.")
    packs = [g[0].pack for g in groups]
    for lim, refs in groups:
        parts = [f"{name}: {'; '.join(items)}" for name, items in (
            ("ran verbatim", lim.verbatim), ("modelled", lim.modelled),
            ("parameters", lim.parameters), ("not exercised", lim.not_exercised)) if items]
        where = f" (on {_refs_text(refs, total)})" if packs.count(lim.pack) > 1 else ""
        out += _wrap(f"{lim.pack}{where}: " + (". ".join(parts) or "none stated") + ".",
                     indent="    ", first="  - ")
    return out


def _notes_lines(report: Report, labels: list[str]) -> list[str]:
    total = len(report.runs)
    out: list[str] = []
    for note, refs in _group((lb, n, n) for lb, r in zip(labels, report.runs, strict=True)
                             for n in r.notes):
        out += _wrap(f"{note} (on {_refs_text(refs, total)})", indent="    ", first="  - ")
    return out


def _command_lines(command: str, indent: str = "    ") -> list[str]:
    """The command as a shell line continued with backslashes within the mail width:
    split between arguments only, so it pastes back into a shell as it was."""
    lexer = shlex.shlex(command, posix=False)  # words as written, quotes kept
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:
        return [indent + command]
    # an option and its value are one unit: they stay on one line
    units: list[str] = []
    for w in words:
        prev = units[-1] if units else ""
        if (prev.startswith("-") and prev != "-" and " " not in prev
                and not w.startswith("-")):
            units[-1] = f"{prev} {w}"
        else:
            units.append(w)
    lines: list[str] = []
    cur = ""
    for w in units:
        if cur and len(indent) + len(cur) + 1 + len(w) + 2 > MAIL_WIDTH:
            lines.append(cur)
            cur = "    " + w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return [indent + ln + (" \\" if i < len(lines) - 1 else "") for i, ln in enumerate(lines)]


def render_markdown(report: Report) -> str:
    """report.md: what a reviewer pastes, unedited, into a reply on xen-devel.

    The summary table first, then what the patch breaks, what it fixes, the findings
    (each once, naming the refs it holds on), the packs' limits, and in an appendix how
    the patch applied on each ref. Lines stay within 80 columns where the content
    allows; past MAIL_LINES lines the findings' tables, then all but the gist of the
    packs' limits, then the traces of accepted deviations are left to report.html/json.
    """
    for tables, limits, brief, compact in ((True, True, False, False),
                                           (False, True, False, False),
                                           (False, False, False, False),
                                           (False, False, True, False),
                                           (False, False, True, True)):
        text = _markdown(report, tables=tables, full_limits=limits, brief_accepted=brief,
                         compact=compact)
        if text.count("\n") <= MAIL_LINES:
            break
    return text


def _markdown(report: Report, tables: bool, header: bool = True,
              tables_at: str = "in report.html and report.json",
              full_limits: bool = True, brief_accepted: bool = False,
              compact: bool = False) -> str:
    labels = _labels(report.runs)
    total = len(report.runs)
    out = [summary_line(report), ""] if header else []

    patches = report.series.patches
    if patches and header:
        first = patches[0].meta
        out += _wrap(f"Patch:      {report.series.subject}", indent=" " * 12, first="")
        if first.author:
            out += _wrap(f"Author:     {first.author}" + (f", {first.date}" if first.date else ""),
                         indent=" " * 12, first="")
        if first.message_id:
            out.append(f"Message-ID: {first.message_id}")
        version = f"v{first.version}" if first.version else "v1 (the subject names no version)"
        out += _wrap(f"Source:     {first.source} ({first.kind}), {version}",
                     indent=" " * 12, first="")
        if len(patches) > 1:
            out.append(f"Series:     {len(patches)} patches")
            for n, p in enumerate(patches, 1):
                out += _wrap(f"{n}/{len(patches)} {p.meta.subject}", indent=" " * 16,
                             first=" " * 12)
        out.append("")

    pairs = list(zip(labels, report.runs, strict=True))
    # what this cut leaves out: said once, in the checks' paragraph (compact), or else
    # where it is left out
    hunks_left = compact and any(len(_apply_lines(r.apply, True)) < len(_apply_lines(r.apply))
                                 for r in report.runs)
    left = [what for what, yes in (
        ("the traces of accepted deviations", brief_accepted and any(
            c.patched is Outcome.ACCEPTED for r in report.runs for c in r.checks)),
        ("the findings' tables", not tables and any(
            len(f.table) > 1 for r in report.runs for c in r.checks for f in c.findings)),
        ("each hunk's lines and each prerequisite's uses", hunks_left)) if yes]
    if report.runs:
        out += _ref_tables(report, labels, packed=compact, tail=(
            f"Left to report.html and report.json: {', '.join(left)}." if left else ""))
        out.append("")

    regressions = [(lb, r, c) for lb, r in pairs for c in r.checks if c.change == "REGRESSION"]
    failures = [(lb, r, c) for lb, r in pairs for c in r.checks
                if _failing(c) and c.change != "REGRESSION"]
    fixed = [(lb, r, c) for lb, r in pairs for c in r.checks if c.change == "fixed"]
    if regressions:
        out.append("## Regressions")
        out += _failure_blocks(regressions, total)
    if failures:
        out.append("## Other failing checks")
        out += _failure_blocks(failures, total)
    accepted = [(lb, r, c) for lb, r in pairs for c in r.checks if c.patched is Outcome.ACCEPTED]
    if accepted:
        out.append("## Accepted deviations")
        out += (_brief_lines(accepted, total, pointer=not compact) if brief_accepted
                else _failure_blocks(accepted, total))
    if fixed:
        out.append("## Fixed by the patch")
        for c, refs in _group((lb, (c.id, c.title, c.detail), c) for lb, _r, c in fixed):
            text = (f"{c.id} on {_refs_text(refs, total)}: {c.title}"
                    + (f" - {c.detail}" if c.detail else ""))
            out += _wrap(text, indent="    ", first="  - ")
        out.append("")
    if any(c.findings for r in report.runs for c in r.checks):
        out.append("## Findings")
        if not tables and not compact:
            out += _wrap(f"The findings' tables are {tables_at}.")
        out += _finding_lines(report, labels, tables=tables)
        out.append("")
    out += _balance_lines(labels, report.runs)
    if any(r.limits for r in report.runs):
        out.append("## Limits")
        out += _limits_lines(report, labels, full=full_limits)
        out.append("")

    if report.runs:
        out.append("## Appendix: how the patch applied")
        trees = {r.tree for r in report.runs}
        if len(trees) == 1 and report.runs[0].tree:
            out += _wrap(f"Tree: {report.runs[0].tree}")
        for label, r in pairs:
            out.append(f"### {label}: {str(r.verdict).upper()}")
            commit = (_short(r.commit) if compact else r.commit) or "(did not resolve)"
            lines = _wrap(commit + (f' "{r.subject}"' if r.subject else ""), indent="  ",
                          first="  ")
            if not header:  # rendered to HTML: the commit is a line of its own there too
                lines[-1] += "\\"
            out += lines
            if r.tree and len(trees) > 1:
                out += _wrap(f"Tree: {r.tree}", indent="  ")
            out += _apply_lines(r.apply, brief=compact)
        out.append("")
        if any(r.notes for r in report.runs):
            out.append("Notes:")
            out += _notes_lines(report, labels)
            out.append("")

    out += ["Reproduce:", "", *_command_lines(report.command), ""]
    text = "\n".join(ln.rstrip() for ln in out)
    return re.sub(r"\n{3,}", "\n\n", text)


def _balance_lines(labels: list[str], runs: Sequence[RunResult]) -> list[str]:
    """BALANCE differences only: functions whose change is not ``pass``."""
    out: list[str] = []
    for lb, r in zip(labels, runs, strict=True):
        compared = any(c.pack == "generic" and c.base is not Outcome.NA for c in r.checks)
        unjudged = [f.name for f in r.functions if f.change == "error"]
        if unjudged and compared:  # each says why in report.json; here only their names
            if not out:
                out.append("## BALANCE differences")
            out += _wrap(f"not judged on {lb}: {', '.join(unjudged)} (why: "
                         "runs[].functions[].reason)", indent="    ", first="  - ")
        for f in r.functions:
            if f.change in ("pass", "error"):
                continue
            if not out:
                out.append("## BALANCE differences")
            counts = [f"{side} {n}" for side, n in (("base", f.paths.base),
                                                    ("patched", f.paths.patched))
                      if n is not None]
            paths = "paths " + (", ".join(counts) or "none")
            out += _wrap(f"{f.name} ({f.file}) on {lb}: {f.change}, {paths}"
                         + (f" - {f.reason}" if f.reason else ""), indent="    ",
                         first="  - ")
            for side in ("base", "patched"):
                for v in getattr(f.violations, side)[:4]:
                    what = (f"{v.kind} at {v.returned_at}" if not v.resource else
                            f"{v.kind} {v.resource} returning {v.rc}; "
                            f"acquired {v.acquired_at}, returned {v.returned_at}")
                    out += _wrap(f"{side}: {what}; "
                                 f"choices: {'; '.join(v.choices) or 'defaults'}",
                                 indent="        ", first="      ")
            out.append("")
    return out


# --------------------------------------------------------------------------- junit.xml


def _apply_case(suite: ET.Element, report: Report, r: RunResult) -> str:
    name = f"apply: {report.series.subject}" if report.series.patches else "apply"
    case = ET.SubElement(suite, "testcase", classname="apply", name=name)
    a = r.apply
    text = "\n".join(_apply_lines(a))
    if a.status is ApplyStatus.CONFLICT:
        ET.SubElement(case, "failure", message=a.detail, type=str(a.status)).text = text
        return "failure"
    if a.status is ApplyStatus.ERROR:
        ET.SubElement(case, "error", message=a.detail, type=str(a.status)).text = text
        return "error"
    if a.status is ApplyStatus.MISSING_PREREQUISITE:
        ET.SubElement(case, "skipped", message=a.detail).text = text
        return "skipped"
    ET.SubElement(case, "system-out").text = text
    return "pass"


def _check_text(c: CheckResult) -> str:
    lines = [f"{c.id} {c.title}", f"base: {c.base}, patched: {c.patched} ({c.change})"]
    if c.detail:
        lines.append(c.detail)
    lines += [ln[2:] if ln.startswith("  ") else ln for ln in _evidence_lines(c)]
    return "\n".join(lines).strip() + "\n"


def _check_case(suite: ET.Element, c: CheckResult) -> str:
    case = ET.SubElement(suite, "testcase", classname=c.id, name=c.title)
    message = c.detail or c.change
    if c.patched is Outcome.FAIL:
        ET.SubElement(case, "failure", message=message, type=c.change).text = _check_text(c)
        return "failure"
    if c.patched is Outcome.ERROR:
        ET.SubElement(case, "error", message=message, type="error").text = _check_text(c)
        return "error"
    if c.patched is Outcome.NA:
        ET.SubElement(case, "skipped", message=c.detail or "does not apply")
        return "skipped"
    ET.SubElement(case, "system-out").text = _check_text(c)
    return "pass"


def render_junit(report: Report) -> str:
    """JUnit XML: a testsuite per ref, a testcase for the apply step and one per check."""
    root = ET.Element("testsuites", name=TOOL)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for name, r in zip(_labels(report.runs), report.runs, strict=True):
        suite = ET.SubElement(root, "testsuite", name=name)
        props = ET.SubElement(suite, "properties")
        for k, v in (("ref", r.ref), ("commit", r.commit), ("subject", r.subject),
                     ("tree", r.tree), ("apply", str(r.apply.status)),
                     ("verdict", str(r.verdict))):
            ET.SubElement(props, "property", name=k, value=v or "")
        results = [_apply_case(suite, report, r)] + [_check_case(suite, c) for c in r.checks]
        counts = {
            "tests": len(results),
            "failures": results.count("failure"),
            "errors": results.count("error"),
            "skipped": results.count("skipped"),
        }
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# --------------------------------------------------------------------------- files


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_reports(report: Report, out_dir: Path) -> list[Path]:
    """Write report.json, report.md, report.html and junit.xml into out_dir, each atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VerifyError(f"report directory {out_dir}: not a directory")
    from verifier.html import render_html

    # Render everything before writing anything: a rendering error leaves old reports whole.
    texts = [
        (REPORT_JSON, json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"),
        (REPORT_MD, render_markdown(report)),
        (REPORT_HTML, render_html(report)),
        (JUNIT_XML, render_junit(report)),
    ]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        texts = _keep_replays(texts, out_dir)
        paths = []
        for name, text in texts:
            path = out_dir / name
            _write_atomic(path, text)
            paths.append(path)
    except OSError as e:
        raise VerifyError(f"cannot write reports to {out_dir}: {e.strerror or e}") from e
    return paths


# A patched side's lifted unit lives in the run's scratch (verifier.scratch), removed when
# the tool exits: the replay scripts a report names there are copied beside the report.
_SCRATCH_UNIT = re.compile(r"/[^'\"\s<>]*/work/\d+-untrusted-[^/'\"\s<>]+/generic/[0-9a-f]+")


def _keep_replays(texts: list[tuple[str, str]], out_dir: Path) -> list[tuple[str, str]]:
    import shutil

    found = sorted({m.group(0) for _, text in texts for m in _SCRATCH_UNIT.finditer(text)})
    moved = {}
    for old in found:
        new = out_dir / "replay" / Path(old).name
        if Path(old).is_dir():
            shutil.rmtree(new, ignore_errors=True)
            shutil.copytree(old, new, symlinks=True)
            moved[old] = str(new.resolve())
    if not moved:
        return texts
    out = []
    for name, text in texts:
        for old, new in moved.items():
            text = text.replace(old, new)
        out.append((name, text))
    return out


# --------------------------------------------------------------------------- terminal


VERDICT_STYLE = {
    Verdict.PASS: "bold green",
    Verdict.FAIL: "bold red",
    Verdict.ERROR: "bold magenta",
    Verdict.NOT_APPLICABLE: "yellow",
}


def checks_summary(r: RunResult, sep: str = ", ") -> str:
    """``REGRESSION P3, fixed P1, 7 pass`` for one run: what failed first, by id."""
    if not r.checks:
        return "no checks"
    order = ["REGRESSION", "fails as on base", "fail", "error", "fixed", "accepted deviation",
             "pass", "n/a"]
    groups: dict[str, list[str]] = {}
    for c in r.checks:
        label = "error" if c.patched is Outcome.ERROR else c.change
        groups.setdefault(label, []).append(c.id)
    parts = []
    for label in sorted(groups, key=lambda k: order.index(k) if k in order else len(order)):
        ids = groups[label]
        if label in ("pass", "n/a"):
            parts.append(f"{len(ids)} {label}")
        else:
            parts.append(f"{label} {id_ranges(ids)}")
    return sep.join(parts)


def print_summary(report: Report, console: Console | None = None) -> None:
    """A short table in the terminal, each ref's apply detail and notes, the verdict line.

    Plain text when not a TTY (no colour, ASCII table); nothing is cut short: what a
    reviewer reads first (where the change was found, why no check ran) is printed whole.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    table = Table(title=report.series.subject or None, title_justify="left", show_edge=False,
                  box=box.SIMPLE_HEAD if console.is_terminal else box.ASCII)
    table.add_column("ref", overflow="fold")
    table.add_column("commit", no_wrap=True)
    table.add_column("apply", no_wrap=True)
    table.add_column("checks", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    labels = _labels(report.runs)
    for label, r in zip(labels, report.runs, strict=True):
        table.add_row(
            label,
            _short(r.commit),
            str(r.apply.status),
            checks_summary(r, sep="\n") or "-",
            Text(str(r.verdict), style=VERDICT_STYLE[r.verdict]),
        )
    patches = report.series.patches
    if len(patches) > 1:  # a series: its members once, then how each went on each ref
        console.print(Text(f"Series of {len(patches)} patches:"), highlight=False)
        for n, p in enumerate(patches, 1):
            console.print(Text(f"  {n}/{len(patches)} {p.meta.subject}"), highlight=False)
    if report.runs:
        console.print(table)
        for label, r in zip(labels, report.runs, strict=True):
            console.print(Text(f"{label}: {r.apply.detail}"), highlight=False)
            if len(patches) > 1 and r.apply.patches:
                members = ", ".join(f"{n} {status}"
                                    for n, (_s, status, _d) in enumerate(r.apply.patches, 1))
                console.print(Text(f"  series: {members}"), highlight=False)
            for note in r.notes:
                console.print(Text(f"  note: {note}", style="dim"), highlight=False)
    console.print(Text(summary_line(report), style=VERDICT_STYLE[report.verdict]))


__all__ = [
    "SCHEMA",
    "checks_summary",
    "id_ranges",
    "print_summary",
    "render_junit",
    "render_markdown",
    "report_json",
    "summary_line",
    "write_reports",
]
