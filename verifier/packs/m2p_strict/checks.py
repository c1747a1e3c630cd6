"""P1-P9 on a base and a patched target: outcomes, evidence and findings.

``run_pack(base, patched, tree_dir)`` runs every property's scenarios on each target
and returns one ``CheckResult`` per property. A property *fails* when one of its
scenarios fails (the property did not hold, or the harness reported a crash, hang,
unexpected call, lock or list damage); it is *error* only when the tool could not
run it (``HarnessError`` or a bug of ours); *n/a* when no scenario applies (the
reason is said). P4 and P7 produce findings and fail only on a crash or a broken
invariant. P9 reads the tree, not the target.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier import memo, scratch
from verifier.build import export_commit, jobs
from verifier.model import (
    CheckResult,
    Evidence,
    Finding,
    Outcome,
    PackLimits,
    PackRun,
    VerifyError,
)
from verifier.target import OP_TIMEOUT

from . import callers
from . import scenarios as sc
from ._compat import HarnessError, HarnessFailure, Target
from .declaration import CHECKS, NAME

SIZES = (5, 64, 1000)  # P1/P2: a handful .. a thousand pages
# exhaustive sizes stay within the harness's arena (verifier.harness.MAX_PAGES)
SIZES_EXHAUSTIVE = (5, 64, 1000, 16384)
P3_SIZES = (300, 1000, 4096)
P3_PREEMPTS = (("always", 0), ("every", 2), ("at", 1), ("at", 3))
P4_SIZES = (64, 1024, 16384)
P4_SIZES_EXHAUSTIVE = (64, 1024, 4096, 16384)
EXHAUSTIVE_SIZES = (5, 300, 700)  # 700: a walk crosses two preemption points
EXHAUSTIVE_PREEMPTS = (("always", 0), ("at", 1), ("at", 2), ("every", 2))


@dataclass
class PropertyRun:
    """One property on one target: its outcome and the scenario results behind it."""

    id: str
    outcome: Outcome
    detail: str = ""
    evidence: Evidence | None = None
    findings: list[Finding] = field(default_factory=list)
    results: list[sc.ScenarioResult] = field(default_factory=list)


@dataclass(frozen=True)
class MutationProof:
    """P1 on a target whose restore fixup was disabled: it must fail."""

    p1_failed: bool
    detail: str
    evidence: Evidence | None = None


# --------------------------------------------------------------------------- plans


def _plan(prop: str, exhaustive: bool) -> list[tuple[sc.Scenario, dict[str, Any]]]:
    sizes = SIZES_EXHAUSTIVE if exhaustive else SIZES
    if prop == "P1":
        return [(sc.restore_legacy, {"nr_pages": n}) for n in sizes]
    if prop == "P2":
        return [(sc.restore_v2, {"nr_pages": n}) for n in sizes]
    if prop == "P3":
        plan: list[tuple[sc.Scenario, dict[str, Any]]] = [
            (sc.empty_domain, {}),
            (sc.locked_page_skipped, {"nr_pages": 12}),
            (sc.locked_page_skipped, {"nr_pages": 600, "preempt": ("always", 0)}),
        ]
        p3_sizes = (*P3_SIZES, 16384) if exhaustive else P3_SIZES
        for n in p3_sizes:
            for pre in P3_PREEMPTS:
                label = f"legacy restore, {n} pages, preemption {pre[0]} {pre[1] or ''}".strip()
                plan.append(
                    (
                        sc.restore_legacy,
                        {"nr_pages": n, "preempt": pre, "label": label, "needs_walk": True},
                    )
                )
        plan.append((sc.no_lockable_l4, {"nr_pages": 8}))
        plan.append(
            (
                sc.no_lockable_l4,
                {"nr_pages": 8, "how": "demoting", "label": "only L4 being devalidated"},
            )
        )
        return plan
    if prop == "P4":
        p4 = P4_SIZES_EXHAUSTIVE if exhaustive else P4_SIZES
        plan = []
        for fn, order in ((sc.restore_legacy, "legacy"), (sc.restore_v2, "v2")):
            for n in p4:
                for pre in (("never", 0), ("always", 0)):
                    if pre[0] == "always" and n > 4096 and not exhaustive:
                        continue  # a state() per continuation: keep the default run quick
                    label = f"{order} order, {n} pages, preemption {pre[0]}"
                    params = {
                        "nr_pages": n,
                        "preempt": pre,
                        "repeat": 1,
                        "label": label,
                        "enforce_batch": False,  # P3's business
                        "check_end_state": False,  # P1's and P2's
                    }
                    plan.append((fn, params))
        for n in p4:  # the tail's later preemption (Jan, 2 Feb): re-entry with an L4 counted
            plan.append((sc.restore_v2_reentered,
                         {"nr_pages": n, "label": f"v2 re-entered order, {n} pages, "
                                                  "preemption never"}))
        return plan
    if prop == "P5":
        return [
            (sc.repeated_context, {"nr_pages": 8, "label": "8 pages, 3 repeats"}),
            (
                sc.repeated_context,
                {
                    "nr_pages": 1000,
                    "preempt": ("always", 0),
                    "label": "1000 pages, 3 repeats with preemption pending",
                },
            ),
        ]
    if prop == "P6":
        plan = [
            (sc.validation_contract, {}),
            (sc.validation_contract, {"strict": True, "label": "same, m2p_strict set"}),
        ]
        seeds = range(1, 9) if exhaustive else range(1, 4)
        plan += [
            (sc.random_contract, {"seed": s, "label": f"random sequence seed {s}"}) for s in seeds
        ]
        plan.append((sc.partial_release, {}))
        return plan
    if prop == "P7":
        return [
            (sc.prefilled_l4, {"label": "pre-filled with idle_pg_table's entry"}),
            (sc.prefilled_l4, {"value": 0x1234_5067, "label": "pre-filled with another value"}),
            (sc.toggled_flag, {}),
        ]
    if prop == "P8":
        return [
            (sc.scope_self, {}),
            (sc.scope_pv32, {}),
            (sc.scope_hvm, {}),
            (sc.scope_other_vcpu, {}),
        ]
    raise ValueError(prop)


# --------------------------------------------------------------------------- one target


def check_target(
    target: Target,
    tree_dir: Path | None = None,
    *,
    exhaustive: bool = False,
    only: Iterable[str] | None = None,
) -> dict[str, PropertyRun]:
    """Run P1..P9 (or ``only`` those) on one target."""
    wanted = set(only) if only else {c.id for c in CHECKS}
    out: dict[str, PropertyRun] = {}
    for spec in CHECKS:
        if spec.id not in wanted:
            continue
        if spec.id == "P9":
            out["P9"] = _p9(target, tree_dir)
            continue
        out[spec.id] = _run_property(spec.id, target, exhaustive)
    return out


def _p9(target: Target, tree_dir: Path | None) -> PropertyRun:
    if tree_dir is None:
        return PropertyRun("P9", Outcome.NA, "no tree to read")
    try:
        contract = measure_fill_contract(target)
    except HarnessError as e:  # type: ignore[misc]
        contract = (None, f"fill_ro_mpt could not be run: {e}")
        run = check_callers(tree_dir, None)
        if run.outcome is Outcome.ERROR:
            run.detail = f"could not judge: {contract[1]}"
        return run
    except HarnessFailure as e:  # type: ignore[misc]  # the tree's fill_ro_mpt crashed
        return PropertyRun("P9", Outcome.FAIL, f"running fill_ro_mpt: {type(e).__name__}: {e}",
                           Evidence(trace=("reset(2 pages)", "set_slot(1, 0x0)",
                                           "fill_ro_mpt(1)", "fill_ro_mpt(1)")))
    return check_callers(tree_dir, contract)


# The roles whose code a property exercises: their file:line (from the target's optional
# ``locations`` mapping, role name -> "file:line") goes into a failure's evidence.
PROPERTY_ROLES = {
    "P1": ("restore fixup block", "RO_MPT slot filler"),
    "P2": ("L4 validator", "L4 slot initialiser"),
    "P3": ("restore fixup block", "page lock"),
    "P4": ("restore fixup block",),
    "P5": ("restore fixup block",),
    "P6": ("L4 validator", "L4 devalidator"),
    "P7": ("restore fixup block", "RO_MPT slot filler"),
    "P8": ("restore fixup block",),
}


def _role_locations(target: Target, prop: str) -> tuple[str, ...]:
    locs = getattr(target, "locations", None)
    if not isinstance(locs, dict):
        return ()
    return tuple(str(locs[r]) for r in PROPERTY_ROLES.get(prop, ()) if locs.get(r))


def _run_property(prop: str, target: Target, exhaustive: bool) -> PropertyRun:
    run = _run_scenarios(prop, target, exhaustive)
    if run.outcome is Outcome.FAIL and run.evidence is not None:
        extra = tuple(x for x in _role_locations(target, prop) if x not in run.evidence.locations)
        if extra:
            run.evidence = dataclasses.replace(run.evidence,
                                               locations=run.evidence.locations + extra)
    return run


def _run_scenarios(prop: str, target: Target, exhaustive: bool) -> PropertyRun:
    results: list[sc.ScenarioResult] = []
    plan = _plan(prop, exhaustive)
    try:
        for fn, params in plan:
            results.append(fn(target, params))
            if results[-1].failed and prop in ("P1", "P2") and not exhaustive:
                break  # the smallest failing domain is the shortest trace
            if results[-1].metrics.get("stopped_by_sandbox"):
                left = len(plan) - len(results)
                if left:  # what the code tried is the finding: no need to see it again
                    results[-1].detail += (f" (the {left} later scenario(s) of {prop} not "
                                           "run: the sandbox stopped the code)")
                return _summarise(prop, results)
        walks = prop != "P3" or any(
            r.status != "n/a" and not r.metrics.get("trivial") for r in results
        )  # P3 does not apply to a tree without a walk: nothing to preempt
        if exhaustive and prop in ("P1", "P3") and walks:
            pre = (("never", 0),) if prop == "P1" else EXHAUSTIVE_PREEMPTS
            results += sc.exhaustive_orders(
                target, sizes=EXHAUSTIVE_SIZES, contexts=2, preempts=pre
            )
    except HarnessError as e:  # type: ignore[misc]
        return PropertyRun(prop, Outcome.ERROR, f"could not run: {e}", results=results)
    except Exception as e:  # a bug of ours must not pass for a verdict
        return PropertyRun(
            prop, Outcome.ERROR, f"tool error: {type(e).__name__}: {e}", results=results
        )
    return _summarise(prop, results)


def _evidence(r: sc.ScenarioResult) -> Evidence:
    return Evidence(trace=tuple(r.trace), state=r.state, locations=tuple(r.locations),
                    output=r.output, replay=tuple(r.replay))


def _summarise(prop: str, results: list[sc.ScenarioResult]) -> PropertyRun:
    """fail > error > accepted > pass > n/a: a failure seen is a verdict even where another
    scenario could not be judged; an error otherwise, since what it did not judge might
    have failed."""
    failed = [r for r in results if r.failed]
    errors = [r for r in results if r.status == "error"]
    accepted = [r for r in results if r.status == "accepted"]
    passed = [r for r in results if r.status == "pass" and not r.metrics.get("trivial")]
    findings = [f for r in results for f in r.findings]
    if prop == "P4":
        findings = _p4_findings(results) + findings
    if prop == "P5":
        findings = _p5_findings(results) + findings
    if failed:
        worst = min(failed, key=lambda r: (len(r.trace), r.metrics.get("nr_pages", 0), r.name))
        detail = f"{len(failed)} of {len(results)} scenarios failed; {worst.name}: {worst.detail}"
        others = []
        for r in failed:
            head = r.detail.split(":", 1)[0]
            if r is not worst and head not in {o.split(":", 1)[0] for o in others}:
                others.append(f"{r.name}: {r.detail}")
        if others:
            detail += " | also: " + " | ".join(others[:3])
        if errors:
            detail += f" | {len(errors)} not judged: {errors[0].detail}"
        return PropertyRun(prop, Outcome.FAIL, detail, _evidence(worst), findings, results)
    if errors:
        why = sorted({r.detail for r in errors})
        detail = (f"{len(errors)} of {len(results)} scenarios not judged: " + "; ".join(why[:3]))
        return PropertyRun(prop, Outcome.ERROR, detail, _evidence(errors[0]), findings, results)
    if accepted:
        first = accepted[0]
        detail = (f"accepted deviation ({len(accepted)} of {len(results)} scenarios): "
                  f"{first.detail} Why accepted: {first.deviation}")
        return PropertyRun(prop, Outcome.ACCEPTED, detail, _evidence(first), findings, results)
    if not passed:
        reasons = sorted({r.detail for r in results if r.status == "n/a"})
        return PropertyRun(prop, Outcome.NA, "; ".join(reasons), None, findings, results)
    na = [r for r in results if r.status == "n/a"]
    detail = f"{len(passed)} scenarios passed"
    if na:
        detail += f" ({len(na)} n/a: " + "; ".join(sorted({r.detail for r in na})) + ")"
    return PropertyRun(prop, Outcome.PASS, detail, None, findings, results)


# --------------------------------------------------------------------------- findings


P4_HEADER = (
    "revision",
    "order",
    "pages",
    "L4s",
    "preemption",
    "calls",
    "walked",
    "max per call",
    "on continuations",
    "on repeat",
)


def p4_rows(revision: str, results: list[sc.ScenarioResult]) -> list[tuple[str, ...]]:
    rows = []
    for r in results:
        m = r.metrics
        if r.status != "pass" or "walked" not in m:
            continue
        order = r.name.split(" order", 1)[0] if " order" in r.name else "legacy"
        pre = r.name.rsplit("preemption ", 1)[-1] if "preemption" in r.name else "never"
        rows.append(
            (
                revision,
                order,
                str(m.get("nr_pages")),
                str(m.get("nr_l4")),
                pre,
                str(m.get("invocations")),
                str(m.get("walked")),
                str(m.get("walked_max")),
                str(m.get("walked_continuations")),
                ",".join(map(str, m.get("walked_repeats", []))),
            )
        )
    return rows


def _p4_findings(results: list[sc.ScenarioResult]) -> list[Finding]:
    rows = p4_rows("", results)
    if not rows:
        return []
    never = [r for r in rows if r[4] == "never"]
    sizes = list(dict.fromkeys(r[2] for r in never))
    cont = [int(r[8]) for r in rows if r[4] != "never"]
    rep = [int(x) for r in rows for x in r[9].split(",") if x]
    if not any(int(r[6]) for r in rows) and not any(rep):
        return [Finding("Pages walked during restore", "no walk at any size.",
                        (P4_HEADER, *rows))]
    parts = []
    for order, label in (("legacy", "legacy order"), ("v2", "v2 order"),
                         ("v2 re-entered", f"v2 re-entered ({sc.REENTRIES} continuations "
                                           "once the kernel's L4 is counted)")):
        mine = {r[2]: r for r in never if r[1] == order}
        if mine:
            col = 8 if order == "v2 re-entered" else 6
            parts.append(f"{label} {', '.join(mine[n][col] if n in mine else '-' for n in sizes)}")
    text = f"pages walked for domains of {', '.join(sizes)} pages: " + "; ".join(parts)
    if cont:
        text += f"; with preemption pending, continuations walk up to {max(cont)}"
    if rep:
        text += f"; a repeated set-context up to {max(rep)}"
    return [Finding("Pages walked during restore", text + ".", (P4_HEADER, *rows))]


def _p5_findings(results: list[sc.ScenarioResult]) -> list[Finding]:
    reps = [(r.name, r.metrics.get("walked_repeats")) for r in results if r.status == "pass"]
    reps = [(n, w) for n, w in reps if w]
    if not reps:
        return []
    text = "pages walked per repetition: " + "; ".join(f"{n}: {w}" for n, w in reps)
    return [Finding("Cost of repeating vCPU 0's context", text)]


# --------------------------------------------------------------------------- P9


def measure_fill_contract(target: Target) -> tuple[bool | None, str]:
    """Which value the tree's own fill_ro_mpt returns when it fills an empty slot.

    (None, why) when it returns nothing (void: no contract change) or tells nothing apart.
    """
    target.reset(2)
    target.set_slot(1, 0)
    on_empty = target.fill_ro_mpt(1)
    on_set = target.fill_ro_mpt(1)
    if on_empty is None:
        return None, "fill_ro_mpt returns void here: no contract change"
    if bool(on_empty) == bool(on_set):
        return None, (f"fill_ro_mpt returns {on_empty} on an empty slot and {on_set} on the "
                      "slot it filled: its result tells nothing apart")
    return bool(on_empty), (f"run, it returns {on_empty} on filling an empty slot, {on_set} "
                            "on a set one")


def check_callers(tree_dir: Path | None, contract: tuple[bool | None, str] | None = None,
                  ) -> PropertyRun:
    """P9: every caller of fill_ro_mpt does the right thing with its new contract.

    ``contract`` is ``measure_fill_contract``'s answer on the tree's harness; without it
    the contract is unknown and a caller that uses the result cannot be judged.
    """
    if tree_dir is None:
        return PropertyRun("P9", Outcome.NA, "no tree to read")
    tree_dir = Path(tree_dir)
    if not tree_dir.is_dir():
        raise VerifyError(f"P9: tree directory {tree_dir} does not exist")
    decls, found = callers.find(tree_dir)
    defs = [d for d in decls if d.kind == "definition"]
    if not defs:
        return PropertyRun("P9", Outcome.NA, "fill_ro_mpt is absent from this tree")
    ret, where = defs[0].return_type, f"{defs[0].file}:{defs[0].line}"
    if ret == "void":
        return PropertyRun("P9", Outcome.NA,
                           f"fill_ro_mpt returns void here ({where}): no contract change")
    users = [c for c in found if c.use != "ignored"]
    if contract is not None and contract[0] is not None:
        found = [callers.rejudge(c, contract[0]) for c in found]
    table: list[tuple[str, ...]] = [("caller", "function", "use", "judgement")]
    table += [(f"{c.file}:{c.line}", c.function, c.use, c.judgement) for c in found]
    finding = Finding(
        "fill_ro_mpt callers",
        f"fill_ro_mpt returns {ret}; "
        + (contract[1] if contract else "its contract was not measured (no harness)")
        + f". {len(found)} callers: {len(users)} use the result, "
        f"{len(found) - len(users)} only need the fill (relying on P7's assumption).",
        tuple(table),
    )
    mismatched = [d for d in decls if d.return_type != ret
                  and not {d.return_type, ret} <= {"bool", "bool_t"}]
    if mismatched:
        d = mismatched[0]
        return PropertyRun(
            "P9", Outcome.FAIL,
            f"{d.file}:{d.line} declares fill_ro_mpt returning {d.return_type}, "
            f"defined returning {ret}",
            Evidence(locations=tuple(f"{m.file}:{m.line}" for m in mismatched)), [finding])
    if users and (contract is None or contract[0] is None):
        why = contract[1] if contract else "fill_ro_mpt's contract was not measured (no harness)"
        if contract is not None:  # measured, and it tells nothing apart: callers rely on it
            return PropertyRun(
                "P9", Outcome.FAIL, f"{why}; {len(users)} callers rely on it: "
                + "; ".join(f"{c.file}:{c.line} {c.text}" for c in users[:3]),
                Evidence(locations=tuple(f"{c.file}:{c.line}" for c in users)), [finding])
        return PropertyRun("P9", Outcome.ERROR, f"could not judge: {why}", None, [finding])
    wrong = [c for c in found if c.verdict == "wrong"]
    if wrong:
        return PropertyRun(
            "P9", Outcome.FAIL,
            f"{len(wrong)} callers misuse fill_ro_mpt's result: "
            + "; ".join(f"{c.file}:{c.line} ({c.function}) {c.text}: {c.judgement}"
                        for c in wrong[:3]),
            Evidence(locations=tuple(f"{c.file}:{c.line}" for c in wrong)), [finding])
    unknown = [c for c in found if c.verdict == "unknown"]
    if unknown:
        return PropertyRun(
            "P9", Outcome.ERROR,
            f"could not judge {len(unknown)} callers: "
            + "; ".join(f"{c.file}:{c.line} {c.text}" for c in unknown[:3]),
            Evidence(locations=tuple(f"{c.file}:{c.line}" for c in unknown)), [finding])
    return PropertyRun(
        "P9", Outcome.PASS,
        f"{len(found)} callers, all consistent with fill_ro_mpt returning {ret}: "
        + ", ".join(f"{c.file}:{c.line}" for c in found),
        None, [finding])


# --------------------------------------------------------------------------- differential


def run_pack(
    base: Target | None,
    patched: Target,
    tree_dir: Path | None,
    *,
    exhaustive: bool = False,
    base_tree_dir: Path | None = None,
) -> list[CheckResult]:
    """P1..P9, base vs patched. ``base`` None: the checks ran on the tree as it is."""
    if tree_dir is not None and not Path(tree_dir).is_dir():
        raise VerifyError(f"tree directory {tree_dir} does not exist")
    prun = check_target(patched, tree_dir, exhaustive=exhaustive)
    brun: dict[str, PropertyRun] | None = None
    if base is not None:
        brun = check_target(base, base_tree_dir, exhaustive=exhaustive)
    return _combine(
        prun, brun, getattr(base, "revision", "base"), getattr(patched, "revision", "patched")
    )


def _merge_p4(brev: str, b: PropertyRun, prev: str, p: PropertyRun) -> list[Finding]:
    rows = p4_rows(f"base ({brev})", b.results) + p4_rows(f"patched ({prev})", p.results)
    texts = [f.text for f in p.findings if f.title == "Pages walked during restore"]
    btexts = [f.text for f in b.findings if f.title == "Pages walked during restore"]
    text = f"Patched: {texts[0] if texts else 'no data'} Base: {btexts[0] if btexts else 'no data'}"
    rest = [f for f in p.findings if f.title != "Pages walked during restore"]
    return [Finding("Pages walked during restore", text, (P4_HEADER, *rows)), *rest]


def mutation_proof(
    mutated: Target,
    *,
    as_is: Target | None = None,
    sizes: Iterable[int] = (5, 64),
    runner: Callable[..., sc.ScenarioResult] | None = None,
) -> MutationProof:
    """Show P1 has teeth: on a target whose fixup is disabled, P1 must fail.

    With ``as_is`` (the tree unmutated) P1 must also pass there, or the proof says so.
    """
    run = runner or sc.restore_legacy
    if as_is is not None:
        clean = [run(as_is, {"nr_pages": n}) for n in sizes]
        bad = [r for r in clean if r.status != "pass"]
        if bad:
            return MutationProof(
                False,
                f"P1 does not pass on the unmutated tree ({bad[0].detail}): no baseline",
                Evidence(trace=tuple(bad[0].trace), state=bad[0].state),
            )
    results = [run(mutated, {"nr_pages": n}) for n in sizes]
    failed = [r for r in results if r.failed]
    if failed:
        r = min(failed, key=lambda r: len(r.trace))
        return MutationProof(
            True,
            f"P1 fails with the fixup disabled: {r.detail.removeprefix('after the restore: ')}",
            Evidence(trace=tuple(r.trace), state=r.state, locations=tuple(r.locations)),
        )
    return MutationProof(
        False,
        "P1 still passes with the fixup disabled: the check has no teeth on this tree "
        "(or the mutation did not take)",
    )


# --------------------------------------------------------------------------- checkouts


MUTATION = "no-fixup"  # what the factory is asked to disable for the mutation proof


def _find_factory() -> Callable[..., Any] | None:
    """The harness's target factory where it offers one under a known name."""
    import importlib

    for mod, name in (("verifier.target", "make_target"),):
        try:
            fn = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            fn = None
        if callable(fn):
            return fn
    return None


def _close(target: Any) -> None:
    close = getattr(target, "close", None)
    if callable(close):
        close()


def _errors(detail: str, ids: Iterable[str]) -> dict[str, PropertyRun]:
    return {i: PropertyRun(i, Outcome.ERROR, detail) for i in ids}


def run_on_checkout(
    co: Any,
    *,
    applied: bool,
    cache: Path,
    factory: Callable[..., Any] | None = None,
    exhaustive: bool = False,
) -> PackRun:
    """The pack on one checkout: ``applied`` -> base = ``co.commit``, patched = worktree;
    already applied -> the tree as it is, plus the mutation proof in the notes."""
    import tempfile

    factory = factory or _find_factory()
    notes: list[str] = []
    tree = Path(co.path)
    target_ids = [c.id for c in CHECKS if c.needs_target]
    targets: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="m2p-base-") as tmp:
        # the base commit's tree, read with git archive (no git state changes)
        base_dir = export_commit(co.path, co.commit, Path(tmp) / "base") if applied else None
        brun: dict[str, PropertyRun] | None = None
        try:
            if factory is None:
                why = "no harness is available to run the code under test"
                prun, brun = _errors(why, target_ids), _errors(why, target_ids) if applied else None
                notes.append(f"m2p-strict: {why}: P1-P8 not run")
            else:
                # base and patched are built apart: one that does not build leaves the
                # other's verdicts standing. Each side has its own harness process, so
                # the base side runs beside the patched one where there are cores for it.
                def base_side() -> tuple[Any, dict[str, PropertyRun]]:
                    assert base_dir is not None
                    base = _target(factory, base_dir, "base", f"base {co.commit[:12]}",
                                   cache, co, patched=False)
                    if isinstance(base, str):
                        return base, _errors(base, target_ids)
                    targets["base"] = base
                    return base, _base_runs(base, base_dir, co.commit, cache, exhaustive)

                pool = ThreadPoolExecutor(max_workers=1) if base_dir is not None and \
                    jobs() > 1 else None
                later = pool.submit(base_side) if pool is not None else None
                try:
                    which = "patched" if applied else "as is"
                    built = _target(factory, tree, which, which, cache, co, patched=applied)
                    if isinstance(built, str):
                        prun = _errors(built, target_ids)
                        notes.append(f"m2p-strict: {which}: {built}")
                    else:
                        targets[which] = built
                        prun = check_target(built, tree, exhaustive=exhaustive)
                        if not applied:
                            notes.append(_mutation_note(co, factory, tree, cache, built))
                    if base_dir is not None:
                        base, brun = later.result() if later is not None else base_side()
                        if isinstance(base, str):
                            notes.append(f"m2p-strict: base: {base}")
                finally:
                    if pool is not None:
                        pool.shutdown(wait=True)
            # P9 without a harness (it did not build): the tree is still read, once
            if "P9" not in prun:
                prun["P9"] = check_callers(tree)
            if brun is not None and base_dir is not None and "P9" not in brun:
                brun["P9"] = check_callers(base_dir)
            # in a fixed order: the base side may have finished first
            order = ("patched", "as is", "base")
            limits = pack_limits({k: targets[k] for k in order if k in targets},
                                 exhaustive=exhaustive)
        finally:
            for t in targets.values():
                _close(t)
    return PackRun(tuple(_combine(prun, brun, co.commit[:12], "worktree")), tuple(notes), limits)


def _judging_code() -> str:
    """The code a verdict of this pack rests on besides the harness sources."""
    here = Path(__file__).resolve().parent
    core = here.parent.parent
    return memo.code_digest(str(here), *(str(core / f) for f in (
        "target.py", "run.py", "sandbox.py", "harness.py", "extract.py", "model.py")))


def _base_runs(base: Any, base_dir: Path, commit: str, cache: Path,
               exhaustive: bool) -> dict[str, PropertyRun]:
    """check_target on the base tree: the same harness on the same commit gives the same
    results for every patch to this ref, so they are kept (verifier.memo)."""
    key = getattr(getattr(getattr(base, "built", None), "sources", None), "key", None)
    if not key:  # a test's own factory: nothing to key on
        return check_target(base, base_dir, exhaustive=exhaustive)
    runs, _ = memo.remembered(
        cache, NAME, (key, commit, f"exhaustive={exhaustive}", _judging_code()),
        lambda: check_target(base, base_dir, exhaustive=exhaustive),
        keep=lambda r: all(x.outcome is not Outcome.ERROR for x in r.values()))
    return runs


def _target(factory: Callable[..., Any], tree: Path, which: str, revision: str, cache: Path,
            co: Any, *, patched: bool) -> Any:
    """A started target, or why it could not be built (the checks then say error)."""
    try:
        # a patched tree's harness is patch text: built in the process's scratch
        return factory(tree, revision=revision, cache=scratch.cache_for(cache, untrusted=patched),
                       **_provenance(co, patched=patched))
    except HarnessError as e:  # type: ignore[misc]
        return f"could not build the {which} harness: {e}"


def pack_limits(targets: dict[str, Any], *, exhaustive: bool = False) -> PackLimits:
    """What this pack's verdicts rest on, for report.md's Limits and report.json."""
    verbatim = []
    for which, t in targets.items():
        locs = getattr(t, "locations", None) or {}
        if locs:
            verbatim.append(f"{which}: " + ", ".join(f"{role} {loc}" for role, loc in locs.items()))
    verbatim.append("P9 reads every caller of fill_ro_mpt in the tree; it runs the tree's "
                    "fill_ro_mpt to learn which value means 'filled'")
    emulated = sorted({e for t in targets.values() for e in (getattr(t, "emulated", None) or ())})
    modelled = [
        "d->page_list, page_alloc_lock (recursive: owner and depth recorded), page locks "
        "held by a scenario, map_domain_page/unmap_domain_page (balance counted)",
        "hypercall_preempt_check(): scripted (never, always, every N-th, at the N-th call)",
        "get_page_type/put_page_type: the driver sets type_info around the tree's validator "
        "and devalidator; get/put_page_from_l4e: succeed, or return an injected "
        "-ERESTART/-EINTR/error at a chosen entry",
        "any other callee: an auto-stub that ends the scenario as 'could not judge'",
    ]
    if emulated:
        modelled.append("EMULATED, not the tree's code: " + ", ".join(emulated))
    sizes = SIZES_EXHAUSTIVE if exhaustive else SIZES
    parameters = [
        f"P1/P2 domains of {', '.join(map(str, sizes))} pages with up to 8 L4s spread "
        f"over them; P3 {', '.join(map(str, P3_SIZES))} pages under "
        f"{len(P3_PREEMPTS)} preemption scripts; P4 "
        f"{', '.join(map(str, P4_SIZES_EXHAUSTIVE if exhaustive else P4_SIZES))} pages; "
        f"P6 {'8' if exhaustive else '3'} random sequences of 60 operations",
        f"one batch is {sc.BATCH} pages between preemption checks; a walk needing more "
        "than 4 x pages + 4 continuations does not terminate; "
        f"{OP_TIMEOUT:g} s per harness operation",
    ]
    keys = [f"{w} {t.built.sources.key}" for w, t in targets.items()
            if getattr(getattr(t, "built", None), "sources", None) is not None]
    if keys:
        verbatim.append("harness builds " + ", ".join(keys)
                        + " (xen-verify harness writes the same sources)")
    if exhaustive:
        parameters.append("exhaustive: every order of 3 pins and 2 set-contexts at "
                          f"{', '.join(map(str, EXHAUSTIVE_SIZES))} pages, 4 preemption points")
    not_exercised = [
        "arch_set_info_guest runs only its vcpu_id == 0 statement; a later -ERESTART of "
        "its tail is played by pinning the kernel's L4 and invoking it again "
        f"({sc.REENTRIES} times, P4 'v2 re-entered')",
        "one CPU: no other CPU takes page locks or changes d->page_list during a walk",
        "a 32-bit guest's context is modelled as guest memory whose native view carries "
        "the requested bits",
    ]
    return PackLimits(NAME, tuple(verbatim), tuple(modelled), tuple(parameters),
                      tuple(not_exercised))


def write_harness_for(co: Any, out_dir: Path, *, patched: bool, cache: Path,
                      mutate: str | None = None) -> tuple[Path, str, list[Path]]:
    """``xen-verify harness``: the harness the checks run on this checkout, byte for byte
    (same sources, same key), plus a replay of every failing trace and a Makefile whose
    ``make run`` feeds each replay to the harness.

    Returns (the directory, the harness key, the replay files).
    """
    from verifier.harness import build, tree_sources, write_sources
    from verifier.target import HarnessTarget

    tree = Path(co.path)
    src = tree_sources(tree, mutate=mutate, **_provenance(co, patched=patched))
    out = write_sources(src, Path(out_dir))
    replays: list[Path] = []
    built = build(src, scratch.cache_for(cache, untrusted=patched) / "harness")
    with HarnessTarget(built, label=src.label) as target:
        runs = check_target(target, tree)
    rdir = out / "replay"
    if rdir.exists():
        for old in rdir.glob("*.txt"):
            old.unlink()
    for prop, run in runs.items():
        ev = run.evidence
        if ev is None or not ev.replay:
            continue
        rdir.mkdir(exist_ok=True)
        path = rdir / f"{prop}.txt"
        path.write_text("\n".join(ev.replay) + "\n")
        replays.append(path)
    _write_makefile(out, src.label, {p.stem: runs[p.stem] for p in replays})
    return out, src.key, replays


def _write_makefile(out: Path, label: str, failing: dict[str, PropertyRun]) -> None:
    from verifier.harness import gcc_command

    lines = [
        f"# xen-verify harness for {label}",
        "# make: build the harness; make run: replay each failing check's trace",
        "",
        "driver: pieces.c driver.c env.h",
        "\t" + " ".join(gcc_command()),
        "",
        "run: driver",
    ]
    if not failing:
        lines.append("\t@echo 'no failing trace to replay'")
    for prop, run in failing.items():
        what = f"{prop} {run.outcome}: {run.detail}"[:150].replace("'", "")
        lines += [f"\t@echo '== replay/{prop}.txt ({what})'",
                  f"\t-./driver < replay/{prop}.txt"]
    lines += ["", ".PHONY: run", ""]
    (out / "Makefile").write_text("\n".join(lines))


def _provenance(co: Any, *, patched: bool) -> dict[str, str]:
    """commit and label for a checkout's harness, as ``xen-verify harness`` names them."""
    from verifier.harness import provenance_commit, tree_label

    return {
        "commit": provenance_commit(co.commit, patched=patched),
        "label": tree_label(co.ref, co.commit, co.source.location, patched=patched),
    }


def _mutation_note(co: Any, factory: Callable[..., Any], tree: Path, cache: Path,
                   as_is: Any) -> str:
    try:
        mutated = factory(tree, revision="fixup disabled", cache=cache, mutate=MUTATION,
                          **_provenance(co, patched=False))
    except HarnessError as e:  # type: ignore[misc]
        return f"m2p-strict mutation proof not run: {e}"
    try:
        proof = mutation_proof(mutated)
    finally:
        _close(mutated)
    if not proof.p1_failed:
        return f"m2p-strict mutation proof: NO TEETH: {proof.detail}"
    return f"m2p-strict mutation proof: {proof.detail}"


def _combine(
    prun: dict[str, PropertyRun], brun: dict[str, PropertyRun] | None, bname: str, pname: str
) -> list[CheckResult]:
    out = []
    for spec in CHECKS:
        p = prun[spec.id]
        b = brun.get(spec.id) if brun else None
        # the base's detail where it says something the matrix does not: why it failed,
        # could not be judged, or deviated
        telling = b is not None and b.outcome in (Outcome.FAIL, Outcome.ERROR, Outcome.ACCEPTED)
        detail = f"patched: {p.detail} | base: {b.detail}" if telling else p.detail
        shown = (Outcome.FAIL, Outcome.ERROR, Outcome.ACCEPTED)
        evidence = p.evidence if p.outcome in shown else None
        if evidence is None and b is not None and b.outcome in shown:
            evidence = b.evidence
        findings = list(p.findings)
        if spec.id == "P4" and b is not None:
            findings = _merge_p4(bname, b, pname, p)
        out.append(
            CheckResult(
                pack=NAME,
                id=spec.id,
                title=spec.title,
                base=b.outcome if b else Outcome.NA,
                patched=p.outcome,
                detail=detail,
                evidence=evidence,
                findings=tuple(findings),
            )
        )
    return out


__all__ = [
    "MutationProof",
    "PropertyRun",
    "check_callers",
    "check_target",
    "measure_fill_contract",
    "mutation_proof",
    "pack_limits",
    "run_on_checkout",
    "run_pack",
    "write_harness_for",
]
