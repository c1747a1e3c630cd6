"""What report.md must state, checked against the Report it was rendered from.

Used on a made-up report shaped like the seed's four-ref run (tests/test_mail.py) and
on the real run (upstream-marked). Facts: every check's id and outcome per ref, every
ref's apply status and detail, every finding's text (verbatim, or as the few word
changes to the text above it that report.md writes for a near-identical variant).
"""

from __future__ import annotations

import re

from verifier.model import Report
from verifier.report import _cell, _checks_cell

MAX_LINES, MAX_OVER_80, MAX_WIDTH = 150, 5, 100


def flat(text: str) -> str:
    return " ".join(text.split())


def size_problems(md: str) -> list[str]:
    lines = md.rstrip("\n").split("\n")
    over = [ln for ln in lines if len(ln) > 80]
    out = []
    if len(lines) > MAX_LINES:
        out.append(f"{len(lines)} lines (at most {MAX_LINES})")
    if len(over) > MAX_OVER_80:
        out.append(f"{len(over)} lines over 80 columns (at most {MAX_OVER_80}): {over}")
    out += [f"{len(ln)} columns: {ln}" for ln in lines if len(ln) > MAX_WIDTH]
    return out


def _variants_in(md: str) -> list[str]:
    """The finding texts report.md states, with the "as above, with ..." ones rebuilt."""
    body = md[md.index("## Findings"):]
    body = body[:body.index("\n## ")] if "\n## " in body[3:] else body
    items = [flat(re.split(r"\n- |\n\n", m)[0]) for m in re.split(r"\n  - ", body)[1:]]
    texts: list[str] = []
    base = ""
    for item in items:
        item = re.sub(r" \[table: \d+ rows\]$", "", item)
        m = re.match(r"(?:On [^:]*: as on .*?|As above), with (.*)\.$", item)
        if m and base:
            text = base
            for new, old in re.findall(r'"(.*?)" for "(.*?)"(?:; |$)', m.group(1)):
                assert old in text, (old, text)
                text = text.replace(old, new, 1)
            texts.append(text)
            continue
        item = re.sub(r"^On [^:]*: ", "", item)
        texts.append(item)
        base = item
    return texts


def _header_ids(header: str) -> dict[str, int]:
    """A matrix header's check ids -> column index; ``P2,P4-P5`` heads one column."""
    out: dict[str, int] = {}
    for n, cell in enumerate(c.strip() for c in header.strip("|").split("|")):
        for part in cell.split(","):
            m = re.fullmatch(r"(\D*)(\d+)-(\D*)(\d+)", part)
            if m and m.group(1) == m.group(3) and int(m.group(2)) < int(m.group(4)):
                for k in range(int(m.group(2)), int(m.group(4)) + 1):
                    out[f"{m.group(1)}{k}"] = n
            else:
                out[part] = n
    return out


def fact_problems(report: Report, md: str) -> list[str]:
    out: list[str] = []
    text = flat(md)
    for r in report.runs:
        if f"{r.apply.status} - {flat(r.apply.detail)}" not in text:
            out.append(f"{r.ref}: apply {r.apply.status} - {r.apply.detail}")
        rows = [ln for ln in md.splitlines() if ln.startswith(f"| {r.ref} ")]
        if not rows:
            out.append(f"{r.ref}: no row in the summary table")
        elif r.checks and not any(_checks_cell(r) in row for row in rows):
            # the checks' own matrix: a column per check id, a cell per outcome
            heads = [ln for ln in md.splitlines() if ln.startswith("| ref ")]
            header = next((h for h in heads if r.checks[0].id in _header_ids(h)), "")
            ids = _header_ids(header)  # a shared column's ids map to its one index
            row = [c.strip() for c in rows[-1].strip("|").split("|")]
            for c in r.checks:
                got = row[ids[c.id]] if c.id in ids and ids[c.id] < len(row) else None
                if got != _cell(c):
                    out.append(f"{r.ref} {c.id}: {_cell(c)!r} not in the matrix ({got!r})")
        for c in r.checks:
            if f"{c.id} " not in text:
                out.append(f"{r.ref}: check {c.id} not named")
    stated = _variants_in(md) if "## Findings" in md else []
    for r in report.runs:
        for c in r.checks:
            for f in c.findings:
                if flat(f.title) not in text:
                    out.append(f"{r.ref} {c.id}: finding title {f.title!r}")
                if f.text and not any(flat(f.text) in s for s in stated):
                    out.append(f"{r.ref} {c.id}: finding text {f.text[:60]!r}...")
    return out
