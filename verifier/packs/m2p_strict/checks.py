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

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.archive import safe_extractall
from verifier.model import CheckResult, Evidence, Finding, Outcome, VerifyError

from . import scenarios as sc
from ._compat import HarnessError, Target
from .declaration import CHECKS, NAME

SIZES = (5, 64, 1000)  # P1/P2: a handful .. a thousand pages
SIZES_EXHAUSTIVE = (5, 64, 1000, 20000)
P3_SIZES = (300, 1000, 4096)
P3_PREEMPTS = (("always", 0), ("every", 2), ("at", 1), ("at", 3))
P4_SIZES = (64, 1024, 16384)
P4_SIZES_EXHAUSTIVE = (64, 1024, 16384, 65536)
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
        p3_sizes = (*P3_SIZES, 20000) if exhaustive else P3_SIZES
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
            out["P9"] = check_callers(tree_dir)
            continue
        out[spec.id] = _run_property(spec.id, target, exhaustive)
    return out


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
            ev = run.evidence
            run.evidence = Evidence(ev.trace, ev.state, ev.locations + extra, ev.output)
    return run


def _run_scenarios(prop: str, target: Target, exhaustive: bool) -> PropertyRun:
    results: list[sc.ScenarioResult] = []
    try:
        for fn, params in _plan(prop, exhaustive):
            results.append(fn(target, params))
            if results[-1].failed and prop in ("P1", "P2") and not exhaustive:
                break  # the smallest failing domain is the shortest trace
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


def _summarise(prop: str, results: list[sc.ScenarioResult]) -> PropertyRun:
    failed = [r for r in results if r.failed]
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
        ev = Evidence(
            trace=tuple(worst.trace),
            state=worst.state,
            locations=tuple(worst.locations),
            output=worst.output,
        )
        return PropertyRun(prop, Outcome.FAIL, detail, ev, findings, results)
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
    legacy = [r for r in rows if r[1] == "legacy" and r[4] == "never"]
    v2 = [r for r in rows if r[1] == "v2"]
    parts = []
    if legacy:
        parts.append("legacy order walks " + ", ".join(f"{r[6]} pages for {r[2]}" for r in legacy))
    if v2:
        walked_v2 = sorted({int(r[6]) for r in v2})
        parts.append("v2 order walks " + ("nothing" if walked_v2 == [0] else str(walked_v2)))
    cont = [int(r[8]) for r in rows if r[4] != "never"]
    if cont:
        parts.append(f"continuations walk up to {max(cont)} pages in all")
    rep = [int(x) for r in rows for x in r[9].split(",") if x]
    if rep:
        parts.append(f"a repeated set-context walks up to {max(rep)} pages")
    return [Finding("Pages walked during restore", "; ".join(parts) + ".", (P4_HEADER, *rows))]


def _p5_findings(results: list[sc.ScenarioResult]) -> list[Finding]:
    reps = [(r.name, r.metrics.get("walked_repeats")) for r in results if r.status == "pass"]
    reps = [(n, w) for n, w in reps if w]
    if not reps:
        return []
    text = "; ".join(f"{n}: pages walked per repetition {w}" for n, w in reps)
    return [Finding("Cost of repeating vCPU 0's context", text)]


# --------------------------------------------------------------------------- P9


FILL = "fill_ro_mpt"
_DEF = re.compile(r"^\s*(?:static\s+)?(?:inline\s+)?(void|bool_t|bool|int)\s+fill_ro_mpt\s*\(")
_FUNC = re.compile(r"^(?:[A-Za-z_][\w\s\*]*?)\b([A-Za-z_]\w*)\s*\([^;]*$")
_BOOL_USE = re.compile(
    r"(!\s*fill_ro_mpt\s*\(|\bif\s*\(\s*!?\s*fill_ro_mpt\s*\(|=\s*!?\s*fill_ro_mpt\s*\("
    r"|&&\s*!?\s*fill_ro_mpt|\|\|\s*!?\s*fill_ro_mpt|return\s+!?\s*fill_ro_mpt\s*\()"
)
_IGNORED = re.compile(r"^\s*(?:\(\s*void\s*\)\s*)?fill_ro_mpt\s*\(.*\)\s*;\s*(?:/[*/].*)?$")


@dataclass(frozen=True)
class Caller:
    file: str
    line: int
    function: str
    text: str
    use: str  # "ignored" | "boolean" | "other"
    judgement: str


def _function_spans(text: str) -> list[tuple[int, int, str]]:
    """(first line, last line, name) of every function definition, by tree-sitter-c."""
    try:
        import tree_sitter
        import tree_sitter_c
    except ImportError:  # the line heuristic alone then
        return []
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
    spans: list[tuple[int, int, str]] = []
    stack = [parser.parse(text.encode()).root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            d = node.child_by_field_name("declarator")
            while d is not None and d.type != "function_declarator":
                d = d.child_by_field_name("declarator")
            name = d.child_by_field_name("declarator") if d is not None else None
            if name is not None and name.text:
                spans.append(
                    (
                        node.start_point[0] + 1,
                        node.end_point[0] + 1,
                        name.text.decode(errors="replace"),
                    )
                )
            continue
        stack.extend(node.children)
    return spans


def _enclosing(spans: list[tuple[int, int, str]], line: int) -> str | None:
    inside = [s for s in spans if s[0] <= line <= s[1]]
    return min(inside, key=lambda s: s[1] - s[0])[2] if inside else None


def find_fill_ro_mpt(tree_dir: Path) -> tuple[list[tuple[str, int, str, str]], list[Caller]]:
    """Definitions/declarations ``(file, line, return type, kind)`` and call sites."""
    decls: list[tuple[str, int, str, str]] = []
    callers: list[Caller] = []
    root = tree_dir / "xen"
    if not root.is_dir():
        root = tree_dir
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = Path(dirpath) / name
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if FILL not in text:
                continue
            rel = str(path.relative_to(tree_dir))
            lines = text.splitlines()
            spans = _function_spans(text)
            func = "?"
            for i, line in enumerate(lines, 1):
                fm = _FUNC.match(line)
                if fm and not line.startswith((" ", "\t", "#")):
                    func = fm.group(1)
                func = _enclosing(spans, i) or func
                if FILL not in line or re.search(r"\bfill_ro_mpt\s*\(", line) is None:
                    continue
                dm = _DEF.match(line)
                if dm and not line.lstrip().startswith("return"):
                    rest = " ".join(lines[i - 1 : i + 3])
                    kind = (
                        "declaration"
                        if rest.split(")", 1)[-1].lstrip().startswith(";")
                        else "definition"
                    )
                    decls.append((rel, i, dm.group(1), kind))
                    continue
                if line.lstrip().startswith(("#", "*", "/*", "//")):
                    continue
                stmt = _statement(lines, i - 1)
                if _IGNORED.match(stmt):
                    use, judge = "ignored", "fine: needs only the fill"
                elif _BOOL_USE.search(stmt):
                    use, judge = "boolean", "uses the result as 'an empty slot was filled'"
                else:
                    use, judge = "other", "uses the result in a way to review"
                callers.append(Caller(rel, i, func, line.strip(), use, judge))
    return decls, callers


def _statement(lines: list[str], idx: int) -> str:
    """The call's statement on one line: joined with a continued previous line and the
    following lines up to the ``;`` or ``)`` closing it (at most a few lines)."""
    text = lines[idx]
    if idx and lines[idx - 1].rstrip().endswith(("=", "!", "(", "&&", "||", "?", ":")):
        text = lines[idx - 1].rstrip() + " " + text.strip()
    j = idx
    while text.count("(") > text.count(")") and j + 1 < len(lines) and j - idx < 6:
        j += 1
        text = text.rstrip() + " " + lines[j].strip()
    return text


def check_callers(tree_dir: Path | None) -> PropertyRun:
    """P9: every caller of fill_ro_mpt still does the right thing with its new contract."""
    if tree_dir is None:
        return PropertyRun("P9", Outcome.NA, "no tree to read")
    tree_dir = Path(tree_dir)
    if not tree_dir.is_dir():
        raise VerifyError(f"P9: tree directory {tree_dir} does not exist")
    decls, callers = find_fill_ro_mpt(tree_dir)
    defs = [d for d in decls if d[3] == "definition"]
    if not defs:
        return PropertyRun("P9", Outcome.NA, "fill_ro_mpt is absent from this tree")
    ret = defs[0][2]
    table: list[tuple[str, ...]] = [("caller", "function", "use", "judgement")]
    for c in callers:
        table.append((f"{c.file}:{c.line}", c.function, c.use, c.judgement))
    locs = tuple(f"{c.file}:{c.line}" for c in callers)
    if ret == "void":
        return PropertyRun(
            "P9",
            Outcome.NA,
            f"fill_ro_mpt returns void here ({defs[0][0]}:{defs[0][1]}): no contract change",
        )
    mismatched = [d for d in decls if d[2] != ret and not {d[2], ret} <= {"bool", "bool_t"}]
    bad = [c for c in callers if c.use == "other"]
    finding = Finding(
        "fill_ro_mpt callers",
        f"fill_ro_mpt returns {ret} ({defs[0][0]}:{defs[0][1]}); {len(callers)} callers: "
        f"{sum(c.use == 'boolean' for c in callers)} use the result, "
        f"{sum(c.use == 'ignored' for c in callers)} ignore it and only need the fill "
        "(it now leaves a non-empty slot alone: they rely on P7's assumption that a "
        "non-empty slot holds idle_pg_table's entry).",
        tuple(table),
    )
    if mismatched:
        d = mismatched[0]
        return PropertyRun(
            "P9",
            Outcome.FAIL,
            f"{d[0]}:{d[1]} declares fill_ro_mpt returning {d[2]}, defined returning {ret}",
            Evidence(locations=tuple(f"{m[0]}:{m[1]}" for m in mismatched)),
            [finding],
        )
    if bad:
        return PropertyRun(
            "P9",
            Outcome.FAIL,
            f"{len(bad)} callers use fill_ro_mpt's result other than as a boolean: "
            + "; ".join(f"{c.file}:{c.line} {c.text}" for c in bad[:3]),
            Evidence(locations=tuple(f"{c.file}:{c.line}" for c in bad)),
            [finding],
        )
    return PropertyRun(
        "P9",
        Outcome.PASS,
        f"{len(callers)} callers, all consistent with fill_ro_mpt returning {ret}: "
        + ", ".join(locs),
        None,
        [finding],
    )


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
    text = (
        "Patched: "
        + (texts[0] if texts else "no data")
        + " Base: "
        + (btexts[0] if btexts else "no data")
    )
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
            f"P1 fails with the fixup disabled ({getattr(mutated, 'revision', '?')}): {r.detail}",
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


def _export_base(co: Any, dest: Path) -> Path:
    """The base commit's xen/ tree, read with ``git archive`` (no git state changes)."""
    import io
    import subprocess
    import tarfile

    out = subprocess.run(
        ["git", "-C", str(co.path), "archive", "--format=tar", co.commit, "xen"],
        capture_output=True,
        check=False,
    )
    if out.returncode:
        raise VerifyError(f"cannot read {co.commit[:12]}'s tree: {out.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
        safe_extractall(tar, dest, label=f"{co.commit[:12]}'s tree")
    return dest


def _errors(detail: str, ids: Iterable[str]) -> dict[str, PropertyRun]:
    return {i: PropertyRun(i, Outcome.ERROR, detail) for i in ids}


def run_on_checkout(
    co: Any,
    *,
    applied: bool,
    cache: Path,
    factory: Callable[..., Any] | None = None,
    exhaustive: bool = False,
) -> tuple[list[CheckResult], list[str]]:
    """The pack on one checkout: ``applied`` -> base = ``co.commit``, patched = worktree;
    already applied -> the tree as it is, plus the mutation proof in the notes."""
    import tempfile

    factory = factory or _find_factory()
    notes: list[str] = []
    tree = Path(co.path)
    target_ids = [c.id for c in CHECKS if c.needs_target]
    with tempfile.TemporaryDirectory(prefix="m2p-base-") as tmp:
        base_dir = _export_base(co, Path(tmp)) if applied else None
        targets: list[Any] = []
        try:
            if factory is None:
                why = "no harness is available to run the code under test"
                prun, brun = _errors(why, target_ids), _errors(why, target_ids) if applied else None
                notes.append(f"m2p-strict: {why}: P1-P8 not run")
            else:
                try:
                    patched = factory(tree, revision="patched" if applied else "as is", cache=cache)
                    targets.append(patched)
                    base = None
                    if base_dir is not None:
                        base = factory(base_dir, revision=f"base {co.commit[:12]}", cache=cache)
                        targets.append(base)
                except HarnessError as e:  # type: ignore[misc]
                    why = f"could not build the harness: {e}"
                    prun, brun = _errors(why, target_ids), _errors(why, target_ids)
                    notes.append(f"m2p-strict: {why}")
                else:
                    prun = {
                        k: v
                        for k, v in check_target(patched, None, exhaustive=exhaustive).items()
                        if k != "P9"
                    }
                    brun = None
                    if base is not None:
                        brun = {
                            k: v
                            for k, v in check_target(base, None, exhaustive=exhaustive).items()
                            if k != "P9"
                        }
                    if not applied:
                        notes.append(_mutation_note(factory, tree, cache, patched))
            prun["P9"] = check_callers(tree)
            if brun is not None and base_dir is not None:
                brun["P9"] = check_callers(base_dir)
        finally:
            for t in targets:
                _close(t)
    return _combine(prun, brun, co.commit[:12], "worktree"), notes


def _mutation_note(factory: Callable[..., Any], tree: Path, cache: Path, as_is: Any) -> str:
    try:
        mutated = factory(tree, revision="fixup disabled", cache=cache, mutate=MUTATION)
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
        detail = f"patched: {p.detail}" + (f" | base: {b.detail}" if b else "")
        evidence = p.evidence if p.outcome is Outcome.FAIL else None
        if evidence is None and b is not None and b.outcome is Outcome.FAIL:
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
    "find_fill_ro_mpt",
    "mutation_proof",
    "run_on_checkout",
    "run_pack",
]
