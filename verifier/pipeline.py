"""The pipeline: trees x refs -> checkout -> apply -> checks -> RunResult, for one series.

The CLI is a thin layer over :func:`verify`; tests call it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from verifier.apply import apply_series
from verifier.model import (
    ApplyStatus,
    Checkout,
    CheckResult,
    PackLimits,
    PatchSeries,
    Report,
    RunResult,
    TreeSource,
    Verdict,
    VerifyError,
    overall_verdict,
    run_verdict,
)
from verifier.tree import checkout, open_tree

Progress = Callable[[str], None]


@dataclass
class TreeRequest:
    """One ``--repo``/``--debian`` argument and the ``--ref``s that follow it."""

    kind: str  # "repo" | "debian"
    spec: str  # path, URL or suite
    refs: list[str] = field(default_factory=list)


def open_source(req: TreeRequest, cache: Path, progress: Progress | None = None) -> TreeSource:
    if req.kind == "debian":
        from verifier.debian import import_debian

        return import_debian(req.spec, cache, progress)
    return open_tree(req.spec, cache, progress)


def run_checks(co: Checkout, series: PatchSeries, applied: bool, cache: Path,
               progress: Progress | None = None, *, exhaustive: bool = False,
               ) -> tuple[list[CheckResult], list[str], list[PackLimits]]:
    """Check packs that concern the series, on the base tree and the patched tree.

    Returns the check results, notes (why no pack ran, when none did) and each pack's
    limits (what its verdicts rest on).
    """
    from verifier.packs import packs_for

    packs = packs_for(series)
    if not packs:
        return [], ["no check pack concerns the functions this patch touches"], []
    from verifier import sandbox

    results: list[CheckResult] = []
    # Where patch code ran unconfined (--no-sandbox on a machine without one), say so.
    notes: list[str] = [] if sandbox.status().available else [sandbox.status().note]
    limits: list[PackLimits] = []
    for pack in packs:
        if progress:
            progress(f"{co.ref}: running check pack {pack.name}")
        run = pack.run_on_checkout(co, applied=applied, cache=cache, exhaustive=exhaustive)
        results.extend(run.checks)
        notes.extend(run.notes)
        if run.limits is not None:
            limits.append(run.limits)
    return results, notes, limits


def verify_ref(series: PatchSeries, source: TreeSource, ref: str, cache: Path, *,
               checks: bool = True, progress: Progress | None = None,
               exhaustive: bool = False) -> RunResult:
    if progress:
        progress(f"{ref}: checking out")
    with checkout(source, ref, cache) as co:
        if progress:
            progress(f"{ref}: applying {len(series.patches)} patch(es) to {co.commit[:12]}")
        result = apply_series(series, co, progress)
        notes = list(source.notes)
        found: list[CheckResult] = []
        limits: list[PackLimits] = []
        if checks and result.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS,
                                         ApplyStatus.THREE_WAY, ApplyStatus.ALREADY_APPLIED):
            found, check_notes, limits = run_checks(
                co, series, applied=result.status is not ApplyStatus.ALREADY_APPLIED,
                cache=cache, progress=progress, exhaustive=exhaustive)
            notes.extend(check_notes)
        return RunResult(
            ref=ref, commit=co.commit, subject=co.subject, tree=source.description,
            apply=result, checks=tuple(found), verdict=run_verdict(result, found),
            notes=tuple(notes), limits=tuple(limits),
        )


def verify(series: PatchSeries, trees: list[tuple[TreeSource, list[str]]], cache: Path, *,
           command: str, checks: bool = True, progress: Progress | None = None,
           exhaustive: bool = False) -> Report:
    """Every ref of every tree. All refs are resolved first: a bad one costs no work."""
    from verifier.tree import resolve

    jobs = [(source, ref) for source, refs in trees for ref in (refs or [source.default_ref])]
    for source, ref in jobs:
        resolve(source, ref)
    runs = []
    for n, (source, ref) in enumerate(jobs, 1):
        say = progress
        if progress and len(jobs) > 1:
            def say(msg: str, _n: int = n) -> None:
                progress(f"[{_n}/{len(jobs)}] {msg}")
        runs.append(verify_ref(series, source, ref, cache, checks=checks, progress=say,
                               exhaustive=exhaustive))
    return Report(series=series, runs=tuple(runs), command=command, verdict=overall_verdict(runs))


def exit_status(report: Report) -> int:
    """0: every run passed or was not applicable; 1: a run failed or errored."""
    return 1 if report.verdict in (Verdict.FAIL, Verdict.ERROR) else 0


__all__ = ["TreeRequest", "VerifyError", "exit_status", "open_source", "verify", "verify_ref"]
