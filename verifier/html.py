"""report.html: the report as one self-contained page, with plots where a picture helps.

Same content as report.md (rendered from it with markdown-it-py, raw HTML disabled, so
nothing from a patch or a tree is ever markup), plus:

- the branch x check matrix as a coloured grid (an HTML table: text stays selectable
  and a screen reader reads it; a plot of it would be a picture of text);
- P4 and any finding table with ``pages`` and ``walked`` columns: pages walked against
  domain size, one line per ref and revision (matplotlib, inlined as SVG);
- generic mode: paths explored per function, base and patched, when runs carry a
  ``functions`` field (``[{name, paths: {base, patched}}, ...]``);
- every finding table whole, as the pack wrote it.

No script, no stylesheet link, no image file: the page opens with no network.
"""

from __future__ import annotations

import html
import io
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jinja2

from verifier.model import Report, RunResult

TEMPLATES = Path(__file__).with_name("html_templates")

CELL_CLASS = {
    "ok": "pass", "FIX": "fixed", "REGR": "regression", "fail": "fail-base", "FAIL": "fail",
    "err": "error", "n/a": "na", "-": "none", "dev": "accepted",
}


def _svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG: no XML prolog, DTD or metadata block."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("svg")  # no display; vector output
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9,
                         "font.family": "sans-serif", "svg.hashsalt": "xen-verify"})
    return plt


def _number(text: str) -> float | None:
    try:
        return float(str(text).replace(",", ""))
    except ValueError:
        return None


def walk_series(report: Report, labels: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    """From finding tables with ``pages`` and ``walked`` columns: series name (ref,
    revision, order) -> [(pages, most pages walked at that size)], sorted by size."""
    series: dict[str, dict[float, float]] = {}
    for label, run in zip(labels, report.runs, strict=True):
        for c in run.checks:
            for f in c.findings:
                if len(f.table) < 2:
                    continue
                head = [h.lower() for h in f.table[0]]
                if "pages" not in head or "walked" not in head:
                    continue
                ip, iw = head.index("pages"), head.index("walked")
                rev = head.index("revision") if "revision" in head else None
                order = head.index("order") if "order" in head else None
                for row in f.table[1:]:
                    x, y = _number(row[ip]), _number(row[iw])
                    if x is None or y is None:
                        continue
                    name = " ".join(p for p in (
                        label, re.sub(r"\s*\(.*\)$", "", row[rev]) if rev is not None else "",
                        row[order] if order is not None else "") if p)
                    pts = series.setdefault(name, {})
                    pts[x] = max(pts.get(x, 0.0), y)
    # Curves that coincide are one line, named by all of them (as findings are grouped).
    merged: dict[tuple[tuple[float, float], ...], list[str]] = {}
    for name, pts in series.items():
        merged.setdefault(tuple(sorted(pts.items())), []).append(name)
    return {" = ".join(names): list(pts) for pts, names in merged.items()}


def walk_plot(series: dict[str, list[tuple[float, float]]]) -> str:
    if not series:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    styles = ["-", "--", ":", "-."]
    for n, (name, pts) in enumerate(series.items()):
        xs, ys = zip(*pts, strict=True)
        label = "\n".join(textwrap.wrap(name, 44, break_on_hyphens=False))
        ax.plot(xs, ys, styles[n % len(styles)], marker="o", markersize=4, label=label,
                clip_on=False, zorder=3)  # a line at 0 sits on the axis: still seen
    ax.set_xscale("log", base=2)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("domain size (pages)")
    ax.set_ylabel("pages walked (most per restore)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              labelspacing=1.0)
    out = _svg(fig)
    plt.close(fig)
    return out


def _paths(fn: Any) -> tuple[str, float | None, float | None]:
    """(name, base, patched) of one ``functions`` entry, a dict or a dataclass."""
    get = fn.get if isinstance(fn, dict) else (lambda k, d=None: getattr(fn, k, d))
    paths = get("paths", {}) or {}
    pget = paths.get if isinstance(paths, dict) else (lambda k, d=None: getattr(paths, k, d))
    return str(get("name", "?")), _number(pget("base")), _number(pget("patched"))


def functions_plot(report: Report, labels: Sequence[str]) -> str:
    rows = [(f"{label}: {name}", b, p) for label, run in zip(labels, report.runs, strict=True)
            for name, b, p in (_paths(fn) for fn in (getattr(run, "functions", None) or ()))]
    if not rows:
        return ""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 0.6 + 0.35 * len(rows)))
    ys = range(len(rows))
    ax.barh([y - 0.2 for y in ys], [b or 0 for _, b, _ in rows], height=0.4, label="base")
    ax.barh([y + 0.2 for y in ys], [p or 0 for _, _, p in rows], height=0.4, label="patched")
    ax.set_yticks(list(ys), [n for n, _, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("paths explored")
    ax.legend(fontsize=7)
    out = _svg(fig)
    plt.close(fig)
    return out


def _matrix(report: Report, labels: Sequence[str]) -> dict[str, Any]:
    from verifier.report import _cell, _check_ids

    ids = _check_ids(report.runs)
    titles: dict[str, str] = {}
    for r in report.runs:
        for c in r.checks:
            titles.setdefault(c.id, c.title)
    rows = []
    for label, r in zip(labels, report.runs, strict=True):
        by_id = {c.id: c for c in r.checks}
        cells = []
        for i in ids:
            c = by_id.get(i)
            text = _cell(c)
            tip = f"{i} {titles[i]}: " + (f"base {c.base}, patched {c.patched}; {c.detail}"
                                          if c else "not run")
            cells.append({"text": text, "cls": CELL_CLASS.get(text, "none"), "title": tip})
        rows.append({"label": label, "apply": str(r.apply.status), "verdict": str(r.verdict),
                     "cells": cells})
    return {"ids": ids, "titles": titles, "rows": rows}


def _tables(report: Report, labels: Sequence[str]) -> Iterable[dict[str, Any]]:
    for label, r in zip(labels, report.runs, strict=True):
        for c in r.checks:
            for f in c.findings:
                if len(f.table) > 1:
                    yield {"caption": f"{c.id} on {label}: {f.title}", "head": f.table[0],
                           "rows": f.table[1:]}


def _patch_rows(report: Report) -> list[tuple[str, str]]:
    patches = report.series.patches
    if not patches:
        return []
    m = patches[0].meta
    rows = [("Patch", report.series.subject), ("Author", m.author or ""),
            ("Date", m.date or ""), ("Message-ID", m.message_id or ""),
            ("Version", f"v{m.version}" if m.version else "v1 (the subject names no version)"),
            ("Source", f"{m.source} ({m.kind})")]
    rows += [(f"{n}/{len(patches)}", p.meta.subject) for n, p in enumerate(patches, 1)
             if len(patches) > 1]
    return [(k, v) for k, v in rows if v]


def render_html(report: Report) -> str:
    """report.html: one file, no network needed to open it."""
    from markdown_it import MarkdownIt

    from verifier.report import _labels, _markdown, summary_line

    labels = _labels(report.runs)
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    body = md.render(_markdown(report, tables=False, header=False, tables_at="below"))
    return env.get_template("report.html.j2").render(
        title=report.series.subject or "xen-verify report",
        patch=_patch_rows(report),
        summary=summary_line(report),
        verdict=str(report.verdict),
        matrix=_matrix(report, labels) if any(r.checks for r in report.runs) else None,
        walk_svg=walk_plot(walk_series(report, labels)),
        functions_svg=functions_plot(report, labels),
        body=body,
        tables=list(_tables(report, labels)),
        escape=html.escape,
    )


def run_labels(runs: Sequence[RunResult]) -> list[str]:
    from verifier.report import _labels

    return _labels(runs)


__all__ = ["render_html", "walk_series"]
