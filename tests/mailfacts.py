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
        m = re.match(r"(?:On [^:]*: as on [^,]*|As above), with (.*)\.$", item)
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
            header = next((ln for ln in md.splitlines() if ln.startswith("| ref ")
                           and f" {r.checks[0].id} " in ln), "")
            ids = [c.strip() for c in header.strip("|").split("|")]
            cells = {i: [c.strip() for c in row.strip("|").split("|")] for i in ids
                     for row in rows[-1:]}
            for c in r.checks:
                got = cells[c.id][ids.index(c.id)] if c.id in ids else None
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
