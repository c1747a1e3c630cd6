"""The BUILD check: the touched units compile with the tree's own flags, base vs patched.

A message on patched that base lacks (matched ignoring line numbers) is new. The Xen build
passes -Werror, so a new warning fails the build as an error does; warnings this compiler
already raises on base are the toolchain's, not the patch's, and are only named.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from verifier.build import (
    CompileResult,
    Diagnostic,
    PreparedTree,
    compile_unit,
    new_diagnostics,
    not_configured,
)
from verifier.model import CheckResult, Evidence, Outcome, PatchSeries, VerifyError

Progress = Callable[[str], None]
TITLE = "the touched units compile with the tree's own flags: no error, no new warning"
ARCH_DIRS = ("xen/arch/arm/", "xen/arch/ppc/", "xen/arch/riscv/")
# C under xen/ that is not hypervisor code: host tools of the build, preprocessed tables.
NOT_UNITS = ("xen/tools/", "xen/scripts/", "xen/include/")


def is_unit(path: str | None) -> bool:
    """Hypervisor C: ``xen/**/*.c``, not the build's host tools or preprocessed tables."""
    return bool(path) and path.startswith("xen/") and path.endswith(".c") \
        and not path.startswith(NOT_UNITS)  # type: ignore[union-attr]


def touched_units(series: PatchSeries) -> list[str]:
    """Hypervisor C files the series leaves in the tree (``xen/**/*.c``), in order."""
    out: list[str] = []
    for patch in series.patches:
        for f in patch.files:
            if is_unit(f.new_path) and f.new_path not in out:
                out.append(f.new_path)  # type: ignore[arg-type]
    return out


def changed_units(worktree: Path, base: str) -> list[str] | None:
    """Hypervisor C files that differ between ``base`` and the worktree, as the tree names
    them (a file the patch names under an old path was followed to its new one by apply).
    None when git cannot say."""
    try:
        out = subprocess.run(["git", "-C", str(worktree), "diff", "--name-only", "--no-renames",
                              "--diff-filter=AM", base, "--"], capture_output=True, text=True,
                             timeout=120, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode:
        return None
    return [p for p in out.stdout.splitlines() if is_unit(p)]


@dataclass
class UnitOutcome:
    source: str
    base: Outcome
    patched: Outcome
    line: str  # one line for the detail
    evidence: list[str]  # compiler messages, tree file:line first
    locations: list[str]
    output: str = ""
    seconds: float = 0.0


def build_check(base: PreparedTree | None, patched: PreparedTree, units: list[str], *,
                progress: Progress | None = None, ref: str = "") -> CheckResult:
    """BUILD over ``units``; ``base`` None: the tree as it is (already applied)."""
    for tree in (patched, base):
        if tree is not None and not tree.ok:
            return CheckResult(id="BUILD", title=TITLE, base=Outcome.NA, patched=Outcome.NA,
                               detail=f"the tree's build could not be prepared: {tree.reason}",
                               pack="generic")
    x86 = [u for u in units if not u.startswith(ARCH_DIRS)]
    skipped = [u for u in units if u.startswith(ARCH_DIRS)]
    if progress:
        progress(f"{ref}: generic: BUILD of {len(x86)} unit(s)")
    outcomes = [_unit(base, patched, u) for u in x86]
    return _combine(outcomes, skipped, base is None)


def _compile(tree: PreparedTree, source: str) -> CompileResult | str:
    """The compile, or why it could not run."""
    if not (tree.root / source).is_file():
        return "absent"
    try:
        return compile_unit(tree, source)
    except VerifyError as e:
        return str(e)


def _unit(base: PreparedTree | None, patched: PreparedTree, source: str) -> UnitOutcome:
    why = not_configured(Path(patched.root), source)
    if why:  # the x86 build never compiles it: nothing to judge here
        return UnitOutcome(source, Outcome.NA, Outcome.NA, f"{source}: {why}", [], [])
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two compiles are independent
        pf = pool.submit(_compile, patched, source)
        bf = pool.submit(_compile, base, source) if base is not None else None
        p = pf.result()
        b = bf.result() if bf is not None else None
    if isinstance(p, str):
        if p == "absent":  # the patch deletes it: nothing to build
            return UnitOutcome(source, Outcome.NA, Outcome.NA, f"{source}: removed", [], [])
        return UnitOutcome(source, Outcome.ERROR, Outcome.ERROR, f"{source}: {p}", [], [])
    b_res = b if isinstance(b, CompileResult) else None
    b_out = Outcome.NA
    if isinstance(b, str) and b != "absent":
        b_out = Outcome.ERROR
    elif b_res is not None:
        b_out = Outcome.FAIL if b_res.errors else Outcome.PASS
    secs = p.seconds + (b_res.seconds if b_res else 0.0)
    # The tree as it is has no base to tell the patch's warnings from the compiler's own:
    # its errors count, its warnings are named.
    new = list(p.errors) if base is None else new_diagnostics(b_res, p)
    new_err = [d for d in new if d.kind == "error"]
    new_warn = [d for d in new if d.kind == "warning"]
    old = [d for d in p.diagnostics if d not in new]
    evidence = [d.text() for d in new_err + new_warn]
    locations = [d.location for d in new_err + new_warn]
    output = p.output if new else ""
    if new_err or new_warn:
        first = (new_err or new_warn)[0]
        what = []
        if new_err:
            what.append(f"{len(new_err)} error(s)")
        if new_warn:
            what.append(f"{len(new_warn)} new warning(s) (errors under the tree's -Werror)")
        return UnitOutcome(source, b_out, Outcome.FAIL,
                           f"{source}: {', '.join(what)}; first: {_short(first)}",
                           evidence, locations, output, secs)
    if p.errors:  # the same errors as base: the unit does not build here at all
        return UnitOutcome(source, b_out, Outcome.NA,
                           f"{source}: does not compile on base either ({_short(p.errors[0])})",
                           [d.text() for d in p.errors[:5]], [d.location for d in p.errors[:5]],
                           p.output, secs)
    took = " (same text compiled before)" if p.cached else f" ({p.seconds:.1f} s)"
    line = f"{source}: compiles{took}"
    if old:
        line += f"; {len(old)} warning(s) this compiler raises on base too, not the patch's"
    if b_out is Outcome.NA and base is not None:
        line += "; new unit (patched only)"
    return UnitOutcome(source, b_out, Outcome.PASS, line, [d.text() for d in old[:5]], [],
                       "", secs)


def _short(d: Diagnostic) -> str:
    return d.text()


def _combine(units: list[UnitOutcome], skipped: list[str], as_is: bool) -> CheckResult:
    def worst(outs: list[Outcome]) -> Outcome:
        for o in (Outcome.FAIL, Outcome.ERROR, Outcome.PASS):
            if o in outs:
                return o
        return Outcome.NA

    patched = worst([u.patched for u in units])
    base = Outcome.NA if as_is else worst([u.base for u in units])
    lines = [u.line for u in units if u.patched is patched] or [u.line for u in units]
    if skipped:
        lines.append(f"not built for x86: {', '.join(skipped)}")
    if not units:
        detail = "no x86 or common unit touched" + (f" ({lines[-1]})" if lines else "")
    else:
        detail = "; ".join(lines)
    bad = [u for u in units if u.evidence]
    evidence = None
    if bad:
        evidence = Evidence(
            trace=tuple(e for u in bad for e in u.evidence),
            state=("new compiler messages on the patched tree (the build uses -Werror: "
                   "a new warning fails it)" if patched is Outcome.FAIL else
                   "compiler messages present on base too"),
            locations=tuple(loc for u in bad for loc in u.locations),
            output="\n".join(u.output for u in bad if u.output)[-4000:],
        )
    return CheckResult(id="BUILD", title=TITLE, base=base, patched=patched, detail=detail,
                       evidence=evidence, pack="generic")
