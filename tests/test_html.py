"""report.html: one self-contained page; plots from the findings; nothing from a patch
or a tree becomes markup; it renders in headless Chromium with the network off."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_report import PATCH, full_report
from verifier.html import render_html, walk_series
from verifier.model import (
    ApplyResult,
    ApplyStatus,
    CheckResult,
    Finding,
    Outcome,
    PatchSeries,
    Report,
    RunResult,
    overall_verdict,
)

# What would make a browser fetch something: resources, not namespace names or links.
FETCH = re.compile(r"""(?:\bsrc\s*=|<link\b|<script\b|@import|url\s*\(\s*(?!#)|"""
                   r"""<iframe\b|<object\b|<embed\b|srcset\s*=|xlink:href\s*=\s*["']https?:|"""
                   r"""href\s*=\s*["']https?:[^"']*\.(?:css|js|svg|png|woff2?)["'])""", re.I)


def test_page_is_self_contained_with_grid_and_plot() -> None:
    page = render_html(full_report())
    assert page.startswith("<!DOCTYPE html>")
    assert not FETCH.search(page), FETCH.search(page)
    # the branch x check grid: a cell per ref and check, coloured by what it did
    assert 'class="cell regression"' in page and 'class="cell fixed"' in page
    # pages walked (P4's tables) and paths per function (the generic run's functions)
    assert page.count("<svg") == 2 and "Pages walked against domain size" in page
    assert "Paths explored per function" in page
    # the finding tables whole, as the pack wrote them
    assert "<th>max per call</th>" in page
    # the text of report.md is there too
    assert "Regressions" in page and "Reproduce:" in page


def test_nothing_from_the_patch_or_tree_becomes_markup() -> None:
    evil = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    runs = (RunResult("v1<b>", "a" * 40, evil, evil, ApplyResult(ApplyStatus.CLEAN, evil),
                      (CheckResult("P1", evil, Outcome.FAIL, Outcome.PASS, evil,
                                   findings=(Finding(evil, evil, (("pages", "walked"),
                                                                  ("64", "3"))),)),)),)
    page = render_html(Report(PatchSeries((PATCH,)), runs, evil, overall_verdict(runs)))
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page


def test_walk_series_groups_coinciding_curves() -> None:
    report = full_report()
    series = walk_series(report, [r.ref for r in report.runs])
    # P4_TABLE: patched legacy walks 4096 at 4096 pages; patched v2 walks 0
    assert series == {"be05b5385f^ patched legacy": [(4096.0, 4096.0)],
                      "be05b5385f^ patched v2": [(4096.0, 0.0)]}


def test_generic_mode_plots_paths_per_function() -> None:
    from verifier.model import FunctionResult, Sides

    run = RunResult("master", "a" * 40, "s", "t", ApplyResult(ApplyStatus.CLEAN, "ok"),
                    functions=(FunctionResult("do_mmu_update", "xen/arch/x86/mm.c", True,
                                              paths=Sides(12, 14)),
                               FunctionResult("put_page", "xen/arch/x86/mm.c", True,
                                              paths=Sides(3, 3))))
    page = render_html(Report(PatchSeries((PATCH,)), (run,), "c", overall_verdict((run,))))
    assert "Paths explored per function" in page and page.count("<svg") == 1
    assert "master: do_mmu_update" in page


def test_renders_in_headless_chromium_offline(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.skip("chromium not installed (apt-get install chromium)")
    page = tmp_path / "report.html"
    page.write_text(render_html(full_report()))
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600"]
    # a proxy that does not exist: any fetch the page tried would fail, not reach out
    flags += ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    r = subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 20000, r.stderr[-2000:]
    dom = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=180).stdout
    assert "<svg" in dom and 'class="cell regression"' in dom
