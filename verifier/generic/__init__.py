"""Generic mode: checks that need no pack, run on every patch touching hypervisor C.

BUILD (here): every translation unit the patch touches compiles with the tree's own
command, on base and on patched; errors and new warnings named with file:line.
BALANCE (lifting and path exploration): called from the marked place in
:func:`run_generic`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from verifier.generic.build_check import TITLE, build_check, changed_units, touched_units
from verifier.model import (
    Checkout,
    CheckResult,
    FunctionResult,
    Outcome,
    PackLimits,
    PatchSeries,
    VerifyError,
)

Progress = Callable[[str], None]
PACK = "generic"
# runs[].functions[] of the last run_generic per worktree: the pipeline takes them with
# take_functions() (run_generic's return shape is shared with the BUILD work).
LAST_FUNCTIONS: dict[str, list] = {}


def take_functions(co: Checkout) -> tuple:
    """The BALANCE per-function results of the last run_generic on ``co``."""
    return tuple(LAST_FUNCTIONS.pop(str(co.path), ()))


def concerns(series: PatchSeries) -> bool:
    """Whether the series touches hypervisor C (``xen/**/*.c``)."""
    return bool(touched_units(series))


def run_generic(co: Checkout, series: PatchSeries, applied: bool, cache: Path,
                progress: Progress | None = None, *, balance: bool = True,
                patched_commit: str | None = None) -> tuple[list[CheckResult], list[str]]:
    """The generic checks on one checkout: ``applied`` -> base = ``co.commit``, patched =
    the worktree (or ``patched_commit``, exported: the worktree stays untouched for a
    pack running at the same time); already applied -> the tree as it is (the
    "patched" column only).

    Returns the check results and notes.
    """
    from verifier.build import prepare_tree, prepared_pair

    units = touched_units(series)
    if not units:
        return [], []
    if applied:  # what the patch changed in this tree, paths as the tree has them
        in_tree = changed_units(Path(co.path), co.commit)
        if in_tree is not None:
            units = in_tree
            if not units:
                return [], ["generic: the patch changes no hypervisor C file in this tree"]
    notes: list[str] = []
    if progress:
        progress(f"{co.ref}: generic: preparing the tree's build")
    try:
        if applied:
            base, patched = prepared_pair(co, cache, progress, patched_commit=patched_commit)
        else:
            base, patched = None, prepare_tree(Path(co.path), cache, progress)
    except (VerifyError, OSError) as e:  # the trees could not be read or written
        why = f"the tree's build could not be prepared: {e}"
        return [CheckResult(id="BUILD", title=TITLE, base=Outcome.ERROR, patched=Outcome.ERROR,
                            detail=why, pack=PACK)], [f"generic: {why}"]
    results = [build_check(base, patched, units, progress=progress, ref=co.ref)]
    if patched.ok:
        on = ", ".join(f"CONFIG_{s}" for s in patched.config_fragment()) or "none of the fragment"
        notes.append(f"generic: built with the tree's own flags: x86 defconfig, and on: {on}")
    if not patched.ok or (base is not None and not base.ok):
        why = patched.reason if not patched.ok else base.reason  # type: ignore[union-attr]
        notes.append(f"generic: the tree's build could not be prepared: {why}")
    if not balance:
        return results, notes

    from verifier.generic.balance_check import balance_check

    check, functions, balance_notes = balance_check(base, patched, units, cache,
                                                    progress=progress, ref=co.ref,
                                                    series=series)
    results.append(check)
    notes.extend(balance_notes)
    LAST_FUNCTIONS[str(co.path)] = functions
    # ---- end of BALANCE

    return results, notes


def generic_limits(functions: tuple[FunctionResult, ...]) -> PackLimits | None:
    """What BALANCE's verdicts rest on (report.md's Limits, ``runs[].limits[]``), or None
    where no function was explored."""
    lifted = [f for f in functions if f.lifted]
    if not lifted:
        return None
    from verifier.generic import explore, resources

    units = sorted({f.file for f in lifted})
    return PackLimits(
        PACK,
        verbatim=(
            "each touched unit compiled whole with the tree's own command and real headers: "
            + ", ".join(units),
            "the touched functions and the static functions they call run as written: "
            + ", ".join(sorted({f.name for f in lifted})),
        ),
        modelled=(
            "every external function: a recording stub whose return value each path "
            "chooses; resource semantics from the model files ("
            + ", ".join(resources.load().families) + ")",
            "external data: zero-filled objects of their real size (DWARF)",
            "current, per-cpu data: one vCPU on a STACK_SIZE-aligned stack",
        ),
        parameters=(
            f"at most {explore.MAX_PATHS} paths and {explore.MAX_SECONDS:g} s per function "
            f"and side; a call site in a loop offers its alternatives on its first "
            f"{explore.SITE_CAP} visits; {explore.PATH_SECONDS} s and {explore.MAX_CALLS} "
            "calls per path",
            "entry states: " + ", ".join(v.get("name", "?") for v in explore.variants())
            + f"; and up to {explore.MAX_GLOBAL_VARIANTS} more per function, the zeroed "
            "state with one global it reads set (a scalar to 1, a bitmap to bit 0)",
        ),
        not_exercised=(
            "global data is zeroed or has one scalar or bitmap set: pointers and structs "
            "in globals stay zeroed, and no two globals are set together",
            "one CPU: no interleaving with another CPU",
        ),
    )


__all__ = ["PACK", "concerns", "generic_limits", "run_generic", "take_functions"]
