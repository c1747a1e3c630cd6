"""Judge explored paths: resources balanced on every return, base vs patched.

Per path, the resource model replays the recorded calls in order: an acquire that
holds adds the resource under its key, a release removes it. On the path's end:
- ``leak``: held at an error return (failure atomicity), or at a success return that
  the base never makes holding it (the base's "returns holding X when rc is C" is the
  function's contract, not a violation);
- ``double-acquire``: a non-recursive resource taken again while held;
- ``release-unheld``: released without being held, where the base does not do so on
  every path of the same return class (consuming a caller's reference is a contract);
- ``bug`` (BUG/ASSERT hit), ``crash``, ``sanitizer``, ``hang``.
The BALANCE change per function: violations on base only -> ``fixed``, a violation
on patched the base lacks -> ``REGRESSION``, the same on both -> ``fails as on base``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from verifier.generic import resources
from verifier.generic.dwarf import Types
from verifier.generic.explore import NOT_JUDGED, Exploration, PathResult, Symbolizer


@dataclass(frozen=True)
class Violation:
    kind: str  # leak | double-acquire | release-unheld | bug | crash | sanitizer | hang
    resource: str  # "gfn lock (get_gfn_type_access)"; "" for bug/crash/...
    rc: str  # the return class and value: "-2 (error)", "void", "NULL"
    choices: tuple[str, ...]  # the choice sequence that reaches it
    acquired_at: str  # tree file:line of the acquire (or the release, or the fault)
    returned_at: str  # tree file:line of the return (the last block that ran)
    replay: str = ""  # the driver script that replays the path

    @property
    def identity(self) -> tuple[str, str, str]:
        """What is compared base vs patched (lines move between trees)."""
        return (self.kind, self.resource, self.rc.split(" ")[-1])


@dataclass
class Held:
    resource: str
    api: str
    site: int
    count: int = 1
    call: object = None  # the explore.Call that took it


@dataclass
class PathJudgement:
    path: PathResult
    rc_class: str
    rc_text: str
    held: list[Held] = field(default_factory=list)
    unheld: list[Held] = field(default_factory=list)  # releases of what was not held
    doubles: list[Held] = field(default_factory=list)


def rc_class(types: Types, function: str, path: PathResult) -> tuple[str, str]:
    """(class, text): class is success | error | void; text shows the value."""
    fn = types.functions.get(function)
    if path.outcome != "return":
        return "abnormal", path.outcome
    if fn is None or fn.ret is None:
        return "void", "void"
    t = types.get(fn.ret)
    rc = path.rc or 0
    size = t.size if 0 < t.size < 8 else 8
    rc &= (1 << (8 * size)) - 1
    if t.kind == "bool":
        return ("success" if rc else "error"), ("true" if rc else "false")
    if t.kind == "ptr":
        return ("success" if rc else "error"), ("non-NULL" if rc else "NULL")
    if t.kind in ("int", "enum") and t.signed:
        v = rc - (1 << (8 * size)) if rc >= 1 << (8 * size - 1) else rc
        return ("error" if v < 0 else "success"), str(v)
    return "success", str(rc)


def replay_path(model: resources.Model, path: PathResult, symbols: dict[str, int]
                ) -> tuple[dict[tuple, Held], list[Held], list[Held]]:
    held: dict[tuple, Held] = {}
    unheld: list[Held] = []
    doubles: list[Held] = []
    for c in path.calls:
        for rule in model.for_fn(c.stub):
            if rule.kind == "query":
                continue
            key = resources.key_of(rule.key, c.args, c.rv, symbols)
            if key is None:
                continue
            k = (rule.resource, *key)
            if rule.kind == "acquire":
                if rule.releases:
                    old = resources.key_of(rule.releases, c.args, c.rv, symbols)
                    if old and old[0] and resources.holds(rule, c.rv, c.args):
                        held.pop((rule.resource, *old), None)
                if not resources.holds(rule, c.rv, c.args):
                    continue
                if k in held:
                    if rule.recursive:
                        held[k].count += 1
                    else:
                        doubles.append(Held(rule.resource, c.stub, c.site, call=c))
                else:
                    held[k] = Held(rule.resource, c.stub, c.site, call=c)
            elif rule.kind == "release":
                if rule.ignore_zero and not any(key):
                    continue
                if k in held:
                    held[k].count -= 1
                    if held[k].count <= 0:
                        del held[k]
                else:
                    unheld.append(Held(rule.resource, c.stub, c.site, call=c))
    return held, unheld, doubles


def judge_paths(types: Types, model: resources.Model, function: str, ex: Exploration,
                symbols: dict[str, int]) -> list[PathJudgement]:
    out = []
    for p in ex.paths:
        cls, text = rc_class(types, function, p)
        held, unheld, doubles = replay_path(model, p, symbols)
        out.append(PathJudgement(p, cls, text, list(held.values()), unheld, doubles))
    return out


@dataclass
class Contract:
    """What the base does by design: held at success returns, releases of the caller's."""

    held: set[tuple[str, str, str]] = field(default_factory=set)  # (class, resource, api)
    consumes: set[tuple[str, str]] = field(default_factory=set)  # (class, resource)


def learn(judged: list[PathJudgement]) -> Contract:
    c = Contract()
    by_class: dict[str, list[PathJudgement]] = {}
    for j in judged:
        by_class.setdefault(j.rc_text if j.rc_class == "success" else j.rc_class,
                            []).append(j)
        if j.rc_class in ("success", "void"):
            for h in j.held:
                c.held.add((j.rc_class, h.resource, h.api))
    for cls, js in by_class.items():
        if not js:
            continue
        common = None
        for j in js:
            s = {h.resource for h in j.unheld}
            common = s if common is None else common & s
        for r in common or ():
            c.consumes.add((cls, r))
    # a release of the caller's resource on every path of a class is the contract;
    # record by resource for each class the base returned in
    return c


STATE = "entry state: "  # the first choice of a path run in another than the first state


def violations(judged: list[PathJudgement], contract: Contract, sym: Symbolizer,
               describe, states: list[str] | None = None) -> list[Violation]:
    """Every violation, once (the same path in several entry states is one: the first
    state's; a path met only in a later state names that state as its first choice)."""
    def key(v: Violation) -> tuple:
        shown = tuple(c for c in v.choices if not c.startswith(STATE))
        return (v.kind, v.resource, v.rc, shown, v.acquired_at, v.returned_at)

    out: list[Violation] = []
    for v in _violations(judged, contract, sym, describe, states or []):
        if all(key(w) != key(v) for w in out):
            out.append(v)
    return out


def _violations(judged: list[PathJudgement], contract: Contract, sym: Symbolizer,
                describe, states: list[str]) -> list[Violation]:
    out: list[Violation] = []
    for j in sorted(judged, key=lambda j: j.path.variant):
        p = j.path
        choices = tuple(describe(c) for c in p.choices)
        if p.variant and p.variant < len(states):
            choices = (STATE + states[p.variant], *choices)
        ret_at = _return_site(sym, p)
        replay = f"{p.variant}:" + (",".join(str(c.k) for c in p.choices) or "-")
        cls_key = j.rc_text if j.rc_class == "success" else j.rc_class
        rc_label = f"{j.rc_text} ({j.rc_class})" if j.rc_class != "void" else "void"
        if p.outcome in NOT_JUDGED:
            # A BUG/ASSERT the stubs' answers led to: the tree asserts an invariant the
            # stubs do not know (mfn_valid after a p2m lookup...). Not judged.
            continue
        if p.outcome in ("crash", "sanitizer", "hang"):
            where = (_first_loc(p.stderr, sym) if p.outcome == "sanitizer" else "?")
            if where == "?" and p.fault:
                where = sym.at(p.fault)
            out.append(Violation(p.outcome, "", p.outcome, choices, where, where, replay))
            continue
        if p.outcome != "return":
            continue
        for h in j.held:
            if (j.rc_class in ("success", "void")
                    and (j.rc_class, h.resource, h.api) in contract.held):
                continue
            out.append(Violation("leak", f"{h.resource} ({h.api})", rc_label, choices,
                                 _where(sym, h), ret_at, replay))
        for h in j.doubles:
            out.append(Violation("double-acquire", f"{h.resource} ({h.api})", rc_label,
                                 choices, _where(sym, h), ret_at, replay))
        for h in j.unheld:
            if (cls_key, h.resource) in contract.consumes:
                continue
            out.append(Violation("release-unheld", f"{h.resource} ({h.api})", rc_label,
                                 choices, _where(sym, h), ret_at, replay))
    return out


def _where(sym: Symbolizer, h: Held) -> str:
    return sym.site(h.call) if h.call is not None else sym.at(h.site)


def _return_site(sym: Symbolizer, p: PathResult) -> str:
    """The return statement's line: the newest block on another line than the shared
    epilogue (at -O0 every return jumps to it)."""
    locs = [sym.at(pc) for pc in p.last_pcs if pc] or ["?"]
    return next((loc for loc in locs[1:] if loc != locs[0] and loc != "?"), locs[0])


def _first_loc(err: str, sym: Symbolizer) -> str:
    """The tree file:line a sanitizer report is about (tree-relative): its SUMMARY line,
    a UBSan "file:line:col: runtime error", or else the first tree frame it names."""
    import re

    err = err or ""
    head = re.findall(r"SUMMARY: \w+Sanitizer: \S+ ([\w./-]+\.[ch]):(\d+)", err)
    head += re.findall(r"([\w./-]+\.[ch]):(\d+):\d+: runtime error", err)
    for f, line in head:
        if "runtime.c" not in f and "stubs.c" not in f:
            return sym._tree_path(f"{f}:{line}")
    for m in re.finditer(r"([\w./-]+\.[ch]):(\d+)", err):
        if "runtime.c" in m.group(1) or "stubs.c" in m.group(1):
            continue
        return sym._tree_path(f"{m.group(1)}:{m.group(2)}")
    return "?"


def claimable(change: str, base_complete: bool, patched_complete: bool) -> tuple[str, str]:
    """A change that rests on a violation one side alone shows is claimed only where the
    other side explored every path within the budget: else it may have the violation on
    a path it never ran. Returns (change, why not claimed)."""
    short = {"REGRESSION": ("base", base_complete),
             "fixed": ("patched", patched_complete)}.get(change)
    if short and not short[1]:
        return "error", (f"{change} not claimed: the violation is on one side only, and "
                         f"{short[0]}'s exploration stopped at the budget")
    return change, ""


def change(base: list[Violation] | None, patched: list[Violation] | None) -> str:
    """fixed | REGRESSION | fails as on base | pass (None: that side did not run)."""
    if base is None or patched is None:
        return "error"
    b = {v.identity for v in base}
    p = {v.identity for v in patched}
    if p - b:
        return "REGRESSION"
    if b - p:
        return "fixed"
    if p:
        return "fails as on base"
    return "pass"
