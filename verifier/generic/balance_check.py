"""The BALANCE check: every function the patch touches, lifted and explored on base
and patched, resources judged on every return (``balance.py``), the change named per
function (``runs[].functions[]``) and for the check."""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from verifier import scratch
from verifier.build import jobs, not_configured
from verifier.generic import balance, explore, lift, resources
from verifier.model import (
    BalanceViolation,
    CheckResult,
    Evidence,
    FunctionResult,
    Outcome,
    Sides,
    ViolationSides,
)

Progress = Callable[[str], None]
TITLE = "resources balanced on every path of each touched function (locks, refs, maps, allocs)"


def touched_functions(base_text: bytes | None, patched_text: bytes | None) -> list[str]:
    """Functions whose text differs between the two versions of a file (or exist in one)."""
    from verifier.extract import ts_functions

    def bodies(text: bytes | None) -> dict[str, str]:
        if text is None:
            return {}
        lines = text.decode(errors="replace").splitlines()
        return {n: "\n".join(lines[a - 1:b]) for n, (a, b) in ts_functions(text).items()}

    b, p = bodies(base_text), bodies(patched_text)
    order = list(p) + [n for n in b if n not in p]
    return [n for n in order if b.get(n) != p.get(n)]


class _Side:
    """One tree's lifted unit and its driver (or why it could not be lifted)."""

    def __init__(self, tree, source: str, functions: list[str], cache: Path) -> None:
        self.tree, self.source = tree, source
        self.lifted: lift.Lifted | None = None
        self.driver: explore.Driver | None = None
        self.reason = ""
        self.sym: explore.Symbolizer | None = None
        self.raw: dict[str, list[balance.Violation]] = {}  # per function, before replays
        why = not_configured(Path(tree.root), source) if tree is not None else ""
        if why:
            self.reason = why
            return
        cmd = tree.unit_command(source) if tree is not None else None
        if cmd is None:
            self.reason = "the tree's build has no compiler command for this unit"
            return
        try:
            self.lifted = lift.lift(Path(tree.root), source, cmd.argv, cmd.cwd, functions,
                                    cache, tree.key, getattr(cmd, "unit", "") or "")
            self.driver = explore.Driver(self.lifted, resources.load())
            self.sym = explore.Symbolizer(self.lifted.exe, Path(tree.root), cmd.cwd,
                                          getattr(cmd, "unit", "") or source)
        except lift.LiftError as e:
            self.reason = f"not lifted: {e}"
        except Exception as e:  # the harness would not start: say so, judge nothing
            self.reason = f"harness did not start: {e}"

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()


def _describe(driver: explore.Driver, sym: explore.Symbolizer):
    types = driver.lifted.types
    enums: dict[str, dict[int, str]] = {}
    for s in driver.lifted.stubs:
        outs = explore._enum_out_params(types, s)
        if outs:
            enums[s.label] = {v: n for n, v in outs[0][1].enumerators}

    def describe(c: explore.Call) -> str:
        alts = driver.alternatives.get(c.stub) or []
        what = ""
        if c.k < len(alts):
            kind, value, out_reg, _size, out_value = alts[c.k]
            if out_reg >= 0 and c.stub in enums:
                what = f"*out = {enums[c.stub].get(out_value, out_value)}"
            elif kind == 0:
                v = value
                what = "NULL" if v == 0 and c.rv == 0 and _returns_ptr(driver, c.stub) else str(v)
            elif kind in (1, 2, 3, 4):
                what = "object"
            else:
                what = f"arg{value}"
        return f"{c.stub}@{sym.site(c)} -> {what}"

    return describe


def _fn_types(side: _Side, fn: str) -> str:
    assert side.lifted is not None
    sym = side.lifted.entries.get(fn, fn)
    return sym.removeprefix("xv_real_").removeprefix("xv_unit_")


def _returns_ptr(driver: explore.Driver, name: str) -> bool:
    for s in driver.lifted.stubs:
        if s.label == name and s.ret is not None:
            return driver.lifted.types.get(s.ret).kind == "ptr"
    return False


def _run_side(side: _Side, fn: str, contract: balance.Contract | None,
              states: list[dict] | None = None,
              ) -> tuple[int, list[balance.Violation], balance.Contract, bool, str]:
    assert side.driver is not None and side.lifted is not None and side.sym is not None
    ex = explore.explore(side.driver, fn, states=states)
    learnt, vs = _judge(side, fn, ex, contract)
    side.raw[fn] = list(vs)  # replay "state:script": what a budget check replays elsewhere
    vs = [_with_replay(side, fn, v, i, ex.states) for i, v in enumerate(vs)]
    notes = [] if ex.complete else [f"budget reached after {len(ex.paths)} paths"]
    for k, what in explore.NOT_JUDGED.items():
        n = sum(1 for p in ex.paths if p.outcome == k)
        if n:
            notes.append(f"{n} path(s) ended on {what} (not judged)")
    note = ", ".join(notes)
    if ex.paths and all(p.outcome in explore.NOT_JUDGED for p in ex.paths):
        raise NothingJudged(note)
    return len(ex.paths), vs, learnt, ex.complete, note


def _judge(side: _Side, fn: str, ex: explore.Exploration, contract: balance.Contract | None
           ) -> tuple[balance.Contract, list[balance.Violation]]:
    """The contract ``ex``'s paths show, and their violations (of ``contract``, else of
    that one), every address they name symbolized."""
    assert side.driver is not None and side.lifted is not None and side.sym is not None
    judged = balance.judge_paths(side.lifted.types, resources.load(), _fn_types(side, fn), ex,
                                 side.lifted.symbols)
    learnt = balance.learn(judged)
    addrs = [a for p in ex.paths for c in p.calls for a in (c.site, *c.up)]
    addrs += [pc for p in ex.paths for pc in p.last_pcs]
    addrs += [h.site for j in judged for h in (*j.held, *j.unheld, *j.doubles)]
    side.sym.lookup(addrs)
    side.sym.lookup([p.fault for p in ex.paths if p.fault], call_site=False)
    return learnt, balance.violations(judged, contract or learnt, side.sym,
                                      _describe(side.driver, side.sym), ex.states)


class NothingJudged(Exception):
    """Every path ended on the harness's own state (a BUG the stubs led to, a NULL field of
    the zeroed state...): the side ran but nothing in it can be judged."""


def _with_replay(side: _Side, fn: str, v: balance.Violation, i: int, names: list[str]
                 ) -> balance.Violation:
    """A shell script beside the harness that replays the violating path."""
    from dataclasses import replace

    assert side.driver is not None and side.lifted is not None
    lines = ["hello", f"limits {explore.SITE_CAP} {explore.MAX_CALLS} {explore.PATH_SECONDS}"]
    for j, s in enumerate(side.lifted.stubs):
        alts = side.driver.alternatives.get(s.label)
        if alts:
            lines.append(f"stub {j} " + " ".join(" ".join(str(x) for x in a) for a in alts))
    vi, _, script = v.replay.partition(":")
    name = names[int(vi)] if vi.isdigit() and int(vi) < len(names) else ""
    lines += side.driver.setups.get(name, side.driver.setup)
    lines.append(f"run {script}")
    script = side.lifted.dir / f"replay-{fn}-{i}.sh"
    try:
        script.write_text(
            "#!/bin/sh\n# Replays one path of " + fn + " (xen-verify BALANCE); "
            "make rebuilds ./harness\ncd \"$(dirname \"$0\")\"\n"
            "ASAN_OPTIONS=detect_leaks=0 ./harness <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
        script.chmod(0o755)
    except OSError:
        return v
    return replace(v, replay=shlex.quote(str(script)))


def _model_violation(v: balance.Violation) -> BalanceViolation:
    return BalanceViolation(kind=v.kind, resource=v.resource, rc=v.rc, choices=v.choices,
                            acquired_at=v.acquired_at, returned_at=v.returned_at,
                            replay=v.replay)


def applied_functions(hunks, unit: str, text: bytes | None) -> list[str]:
    """Already applied (no base): the tree's functions that hold the patch's added lines,
    and those its hunk headers name."""
    from verifier.extract import ts_functions

    if text is None:
        return []
    spans = ts_functions(text)
    names: list[str] = []
    for h in hunks:
        if h.file != unit:
            continue
        if h.function in spans and h.function not in names:
            names.append(h.function)
        lo, hi = h.new_start, h.new_start + max(h.new_len, 1)
        for name, (a, b) in spans.items():  # the functions the hunk's new side overlaps
            if a < hi and b >= lo and name not in names:
                names.append(name)
    return names


def balance_check(base, patched, units: list[str], cache: Path, *,
                  progress: Progress | None = None, ref: str = "", series=None
                  ) -> tuple[CheckResult, list[FunctionResult], list[str]]:
    """BALANCE over the functions ``units`` touch; ``base`` None: already applied (the
    tree as it is, judged without a base: its violations are shown, not judged)."""
    notes: list[str] = []
    series_hunks = []
    if series is not None:
        from verifier.patch import parse_hunks

        for p in series.patches:
            series_hunks += parse_hunks(p.diff)
    for tree in (patched, base):
        if tree is not None and not tree.ok:
            return (CheckResult(id="BALANCE", title=TITLE, base=Outcome.NA, patched=Outcome.NA,
                                detail=f"the tree's build could not be prepared: {tree.reason}",
                                pack="generic"), [], notes)
    functions: list[FunctionResult] = []
    t0 = time.monotonic()
    total_paths = 0
    plans = []  # (unit, touched functions, base text, patched text)
    for unit in units:
        ptext = _read(Path(patched.root) / unit)
        btext = _read(Path(base.root) / unit) if base is not None else None
        names = touched_functions(btext, ptext) if base is not None else \
            applied_functions(series_hunks, unit, ptext)
        if names:
            plans.append((unit, names, btext, ptext))
    # Every side of every unit is lifted at once (gcc, the link, the harness start: each
    # independent of the others); exploring stays in order, base before patched.
    lifting: dict[tuple[str, str], Future[_Side] | None] = {}
    # the patched unit is patch text: its lifted harness is kept out of the cache
    patched_cache = scratch.cache_for(cache, untrusted=base is not None)
    with ThreadPoolExecutor(max_workers=max(1, min(jobs(), 2 * len(plans) or 1))) as pool:
        for unit, names, btext, ptext in plans:
            if progress:
                progress(f"{ref}: generic: lifting {unit} ({', '.join(names)})")
            lifting[unit, "patched"] = (pool.submit(_Side, patched, unit, names, patched_cache)
                                        if ptext is not None else None)
            if base is not None:
                lifting[unit, "base"] = (pool.submit(_Side, base, unit, names, cache)
                                         if btext is not None else None)
        try:
            for unit, names, btext, ptext in plans:
                sides = {k: (f.result() if f is not None else None)
                         for (u, k), f in lifting.items() if u == unit}
                for fn in names:
                    functions.append(_function(fn, unit, sides, btext, ptext))
                    total_paths += sum(x for x in (functions[-1].paths.base,
                                                   functions[-1].paths.patched) if x)
        finally:  # every harness started is stopped, whatever failed
            for f in lifting.values():
                if f is not None and f.exception() is None:
                    with contextlib.suppress(Exception):  # closing the next one matters more
                        f.result().close()
    secs = time.monotonic() - t0
    return _check(functions, base is not None, total_paths, secs), functions, notes


def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def _function(fn: str, unit: str, sides: dict, btext, ptext) -> FunctionResult:
    from verifier.extract import ts_functions

    in_base = btext is not None and fn in ts_functions(btext)
    in_patched = ptext is not None and fn in ts_functions(ptext)
    if not in_patched:  # nothing to compare: the patch deletes (or renames) it
        return FunctionResult(name=fn, file=unit, lifted=False, change="n/a",
                              reason="removed by the patch: nothing runs on patched")
    paths: dict[str, int | None] = {"base": None, "patched": None}
    viols: dict[str, list[BalanceViolation] | None] = {"base": None, "patched": None}
    reasons = []
    explored_only: set[str] = set()  # lifted and explored, but no path could be judged
    complete: dict[str, bool] = {}  # every path within the budget explored, per side
    contract = None
    # the same entry states on both sides: the globals either side's code reads
    units = [sides[k].lifted for k in ("base", "patched")
             if sides.get(k) is not None and sides[k].lifted is not None
             and fn in sides[k].lifted.functions]
    states = explore.function_variants(units, fn) if units else None
    for name, present in (("base", in_base), ("patched", in_patched)):
        side = sides.get(name)
        if side is None or not present:
            if name in sides and not present:
                viols[name] = []
                paths[name] = 0
            continue
        if side.driver is None:
            reasons.append(f"{name}: {side.reason}")
            continue
        assert side.lifted is not None
        if fn not in side.lifted.functions:
            reasons.append(f"{name}: {fn} is not emitted in the unit (static inline, "
                           "inlined into its callers)")
            continue
        try:
            n, vs, learnt, complete[name], note = _run_side(side, fn, contract, states)
        except explore.ExploreError as e:
            reasons.append(f"{name}: not explored: {e}")
            continue
        except NothingJudged as e:
            reasons.append(f"{name}: no path judged: {e}")
            explored_only.add(name)
            continue
        except Exception as e:
            reasons.append(f"{name}: harness failed: {str(e).splitlines()[0][:200]}")
            continue
        if name == "base":
            contract = learnt
        if note:
            reasons.append(f"{name}: {note}")
        paths[name] = n
        viols[name] = [_model_violation(v) for v in vs]
    lifted = all(viols[k] is not None or k in explored_only for k in sides)
    if not all(viols[k] is not None for k in sides):
        ch = "error"
    elif "base" in sides:
        ch = balance.change(_as_bal(viols["base"]), _as_bal(viols["patched"]))
        # the side that stopped at the budget runs the other's violating paths itself
        short = {"REGRESSION": ("base", "patched"), "fixed": ("patched", "base")}.get(ch)
        same = short is not None and not complete.get(short[0], True) and _same_paths_clean(
            sides[short[0]], sides[short[1]], fn, states, contract)
        ch, why = balance.claimable(ch, complete.get("base", True) or bool(same),
                                    complete.get("patched", True) or bool(same))
        if why:
            reasons.append(why)
        elif same:
            reasons.append(f"{ch}: {short[0]} stopped at the budget, and runs the other "
                           "side's violating paths clean")
    else:
        ch = "fail" if viols["patched"] else "pass"
    return FunctionResult(
        name=fn, file=unit, lifted=lifted, reason="; ".join(reasons),
        paths=Sides(paths["base"], paths["patched"]),
        violations=ViolationSides(tuple(viols["base"] or ()), tuple(viols["patched"] or ())),
        change=ch)


def _same_paths_clean(short: _Side, other: _Side, fn: str, states: list[dict] | None,
                      contract: balance.Contract | None) -> bool:
    """Whether ``short`` (its exploration stopped at the budget) runs each of ``other``'s
    one-sided violating paths, same state and same choices, without that violation."""
    if short.driver is None or short.lifted is None or short.sym is None or states is None:
        return False
    mine = {v.identity for v in short.raw.get(fn, [])}
    theirs = [v for v in other.raw.get(fn, []) if v.identity not in mine]
    wanted = []
    for v in theirs:
        vi, _, script = v.replay.partition(":")
        if not vi.isdigit():
            return False
        wanted.append((int(vi), tuple(int(k) for k in script.split(",") if k not in ("", "-"))))
    if not wanted:
        return False
    try:
        ex = explore.run_scripts(short.driver, fn, states, wanted)
    except Exception:
        return False
    if any(p.outcome in explore.NOT_JUDGED for p in ex.paths):
        return False  # the same choices end elsewhere on this side: not comparable
    found = {v.identity for v in _judge(short, fn, ex, contract)[1]}
    return not any(v.identity in found for v in theirs)


def _as_bal(vs) -> list[balance.Violation]:
    return [balance.Violation(v.kind, v.resource, v.rc, v.choices, v.acquired_at,
                              v.returned_at) for v in vs or ()]


def _check(functions: list[FunctionResult], has_base: bool, paths: int, secs: float
           ) -> CheckResult:
    ran = [f for f in functions if f.lifted and f.change != "error"]
    if not functions:
        return CheckResult(id="BALANCE", title=TITLE, base=Outcome.NA, patched=Outcome.NA,
                           detail="the patch touches no function in a C unit", pack="generic")
    if not ran:  # like an unpreparable tree: nothing was judged, each function says why
        return CheckResult(id="BALANCE", title=TITLE, base=Outcome.NA, patched=Outcome.NA,
                           detail="no touched function could be lifted and judged: "
                                  f"{functions[0].reason}",
                           pack="generic")

    def outcome(side: str) -> Outcome:
        return Outcome.FAIL if any(getattr(f.violations, side) for f in ran) else Outcome.PASS

    base = outcome("base") if has_base else Outcome.NA
    patched = outcome("patched")
    if not has_base:  # nothing to compare with: what the model flags is shown, not judged
        found = sum(len(f.violations.patched) for f in ran)
        return CheckResult(
            id="BALANCE", title=TITLE, base=Outcome.NA, patched=Outcome.NA, pack="generic",
            detail=f"already applied: no base to compare with; "
                   f"{sum(1 for f in functions if f.lifted)}/{len(functions)} functions "
                   f"lifted, {len(ran)} judged, {paths} paths, {found} violation(s) shown in "
                   "runs[].functions, not judged")
    changed = [f for f in ran if f.change not in ("pass",)]
    lifted = sum(1 for f in functions if f.lifted)
    parts = [f"{lifted}/{len(functions)} functions lifted, {len(ran)} judged, {paths} paths "
             f"in {secs:.1f}s"]
    for f in changed:
        parts.append(f"{f.name}: {f.change}")
    first = next((v for f in changed for v in (*f.violations.patched, *f.violations.base)),
                 None)
    ev = None
    if first is not None:
        ev = Evidence(trace=first.choices, state=f"{first.kind} {first.resource} at return "
                      f"{first.rc}", locations=(first.acquired_at, first.returned_at),
                      output=first.replay)
    return CheckResult(id="BALANCE", title=TITLE, base=base, patched=patched,
                       detail="; ".join(parts), evidence=ev, pack="generic")
