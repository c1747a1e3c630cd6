"""The pipeline: trees x refs -> checkout -> apply -> checks -> RunResult, for one series.

The CLI is a thin layer over :func:`verify`; tests call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from verifier.apply import apply_series
from verifier.build import jobs
from verifier.generic import generic_limits, run_generic, take_functions
from verifier.model import (
    ApplyStatus,
    Checkout,
    CheckResult,
    Outcome,
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
        functions: tuple = ()
        if checks and result.status in (ApplyStatus.CLEAN, ApplyStatus.OFFSETS,
                                         ApplyStatus.THREE_WAY, ApplyStatus.ALREADY_APPLIED):
            applied = result.status is not ApplyStatus.ALREADY_APPLIED
            if applied and result.patched_commit and jobs() > 1:
                # the packs read the worktree while generic mode builds an export of the
                # patched commit: neither waits for the other
                with ThreadPoolExecutor(max_workers=1) as pool:
                    packs = pool.submit(run_checks, co, series, applied=applied, cache=cache,
                                        progress=progress, exhaustive=exhaustive)
                    generic, generic_notes = run_generic(
                        co, series, applied, cache, progress,
                        patched_commit=result.patched_commit)
                    found, check_notes, limits = packs.result()
            else:
                found, check_notes, limits = run_checks(
                    co, series, applied=applied, cache=cache, progress=progress,
                    exhaustive=exhaustive)
                generic, generic_notes = run_generic(co, series, applied, cache, progress)
            notes.extend(check_notes)
            found.extend(generic)
            notes.extend(generic_notes)
            functions = take_functions(co)
            balance_limits = generic_limits(functions)
            if balance_limits is not None:
                limits.append(balance_limits)
        elif checks and result.applied_anyway:
            # missing a prerequisite, yet applied: BUILD alone, as the evidence (the run
            # stays n/a; nothing else is judged on a tree that lacks what the patch uses)
            built, generic_notes = run_generic(co, series, True, cache, progress,
                                               balance=False)
            # what the ref lacks, shown: a failure here is the prerequisite's absence,
            # not a regression of the patch, so no base is compared (the detail says
            # how base fared)
            found = [replace(c, base=Outcome.NA,
                             detail="applied all the same on a ref that lacks a "
                                    f"prerequisite: {c.detail}") for c in built]
            notes.extend(generic_notes)
        return RunResult(
            ref=ref, commit=co.commit, subject=co.subject, tree=source.description,
            apply=result, checks=tuple(found), verdict=run_verdict(result, found),
            notes=tuple(notes), limits=tuple(limits), functions=functions,
        )


def verify(series: PatchSeries, trees: list[tuple[TreeSource, list[str]]], cache: Path, *,
           command: str, checks: bool = True, progress: Progress | None = None,
           exhaustive: bool = False, jobs: int = 1) -> Report:
    """Every ref of every tree. All refs are resolved first: a bad one costs no work.

    ``jobs`` > 1 runs that many refs at once, each in a process of its own (worktrees,
    harness builds and runs are all per process); the runs keep the order given. Within
    a ref, the tree's make runs -j ``jobs`` and generic mode's lifting the ref's share
    of it, so the last ref running does not leave the other cores idle.
    """
    from verifier.build import set_jobs
    from verifier.tree import release_parked, resolve

    set_jobs(jobs)
    todo = [(source, ref) for source, refs in trees for ref in (refs or [source.default_ref])]
    for source, ref in todo:
        resolve(source, ref)
    try:
        runs = _verify_all(series, todo, cache, checks=checks, progress=progress,
                           exhaustive=exhaustive, jobs=jobs)
    finally:  # one run's worktrees serve its own refs only: none is left for the next
        release_parked()
    return Report(series=series, runs=tuple(runs), command=command, verdict=overall_verdict(runs))


def _verify_all(series: PatchSeries, todo: list[tuple[TreeSource, str]], cache: Path, *,
                checks: bool, progress: Progress | None, exhaustive: bool,
                jobs: int) -> list[RunResult]:
    if jobs > 1 and len(todo) > 1:
        from verifier.parallel import verify_parallel

        runs = verify_parallel(series, todo, cache, checks=checks, progress=progress,
                               jobs=jobs, exhaustive=exhaustive)
    else:
        runs = []
        for n, (source, ref) in enumerate(todo, 1):
            t0 = time.monotonic()
            say = _numbered(progress, n, len(todo), t0) if len(todo) > 1 else progress
            runs.append(verify_ref(series, source, ref, cache, checks=checks, progress=say,
                                   exhaustive=exhaustive))
            if say and len(todo) > 1:
                say(f"{ref}: {done_line(runs[-1], time.monotonic() - t0)}")
    return runs


def _numbered(progress: Progress | None, n: int, total: int,
              started: float | None = None) -> Progress | None:
    """Progress lines prefixed ``[n/total]`` (and the ref's elapsed time, when timed)."""
    if progress is None:
        return None

    def say(msg: str) -> None:
        elapsed = f" {time.monotonic() - started:5.1f}s" if started is not None else ""
        progress(f"[{n}/{total}{elapsed}] {msg}")

    return say


def done_line(run: RunResult, seconds: float) -> str:
    """``PASS (offsets; fixed P1, 8 pass) in 12.3 s``: a ref's result as it completes."""
    from verifier.report import checks_summary

    return (f"{str(run.verdict).upper()} ({run.apply.status}; {checks_summary(run)}) "
            f"in {seconds:.1f} s")


def exit_status(report: Report) -> int:
    """0: every run passed or was not applicable; 1: a run failed or errored."""
    return 1 if report.verdict in (Verdict.FAIL, Verdict.ERROR) else 0


__all__ = ["TreeRequest", "VerifyError", "exit_status", "open_source", "verify", "verify_ref"]
