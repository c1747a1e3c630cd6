"""The m2p-strict checks on simulated revisions of the code under test.

``SimXen`` is a small Python stand-in for the harness, written from the *shape* of the
code (the restore loop, the validator's return paths, get/put_page_type's part), with
knobs for the revision ("prefix": no walk; "v1": the seed; "v2": walk only when the
flag changes) and for bugs we invent. It exists only to test the checker: the real
verification runs on the generated harness.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.model import Outcome, Patch, PatchMeta, PatchSeries, VerifyError
from verifier.packs import all_packs, packs_for
from verifier.packs.m2p_strict import PACK
from verifier.packs.m2p_strict._compat import (
    HarnessCrash,
    HarnessError,
    HarnessHang,
    UnexpectedCall,
    make_failure,
)
from verifier.packs.m2p_strict.checks import (
    check_callers,
    check_target,
    measure_fill_contract,
    mutation_proof,
    run_pack,
)
from verifier.packs.m2p_strict.model import CONSTANTS, M2PModel
from verifier.packs.m2p_strict.scenarios import restore_legacy
from verifier.target import make_target

ERESTART, EINTR = CONSTANTS["ERESTART"], CONSTANTS["EINTR"]
M2P = 1 << CONSTANTS["m2p_strict_bit"]
IDLE = 0x8000_0000_DEAD_B067  # differs from the model's idle value on purpose
BUGS = {
    "no_unlock_on_restart",  # -ERESTART path forgets spin_unlock_recursive
    "never_preempt",  # the walk never checks for preemption
    "count_partial",  # nr_l4_pages incremented on preempted validation too
    "walk_scope",  # walks for self set-context and 32-bit PV as well
    "lose_page",  # on preemption the page just taken off the list is not put back
    "spin_without_l4",  # checks preemption only after meeting an L4
}


class SimPage:
    def __init__(self, mfn: int) -> None:
        self.mfn = mfn
        self.type = "none"
        self.validated = self.partial = self.locked = self.held = False
        self.count = 0
        self.slot = 0
        self.nr_validated = 0
        self.demoting = False


class SimXen:
    """Plays one revision of the code under test behind the Target protocol."""

    def __init__(self, rev: str = "v2", bugs: frozenset[str] | set[str] = frozenset()) -> None:
        assert rev in ("prefix", "v1", "v2") and set(bugs) <= BUGS
        self.rev, self.bugs = rev, set(bugs)
        self.revision = f"sim {rev}" + (f" +{','.join(sorted(bugs))}" if bugs else "")
        self.constants = dict(CONSTANTS)
        self.reset(0)

    # -- setup
    def reset(
        self, nr_pages: int, *, pv: bool = True, pv32: bool = False, vm_assist: int = 0
    ) -> None:
        self.pages = [SimPage(m) for m in range(nr_pages)]
        self.page_list = list(range(nr_pages))
        self.pv, self.pv32, self.vm_assist = pv, pv32, vm_assist
        self.nr_l4 = 0
        self.alloc_lock = 0
        self.mode, self.n, self.calls = "never", 0, 0
        self.inj: dict[str, tuple[int, int]] = {}
        self.counters = {"list_removed": 0, "preempt_checks": 0, "fill_calls": 0}

    def set_preempt(self, mode: str, n: int = 0) -> None:
        self.mode, self.n, self.calls = mode, n, 0

    def inject(self, fn: str, *, entry: int, rc: int) -> None:
        self.inj[fn] = (entry, rc)

    def hold_page_lock(self, mfn: int, held: bool = True) -> None:
        self.pages[mfn].held = held

    def set_slot(self, mfn: int, value: int) -> None:
        self.pages[mfn].slot = value

    # -- environment
    def _preempt(self) -> bool:
        self.counters["preempt_checks"] += 1
        self.calls += 1
        if self.mode == "always":
            return True
        if self.mode == "every":
            return self.n > 0 and self.calls % self.n == 0
        return self.mode == "at" and self.calls == self.n

    def _take(self, fn: str, i: int) -> int | None:
        e = self.inj.get(fn)
        if e and e[0] == i:
            del self.inj[fn]
            return e[1]
        return None

    def _page_lock(self, p: SimPage) -> bool:
        if p.held or p.locked or not p.validated or not p.count:
            return False
        p.locked, p.count = True, p.count + 1
        return True

    def _page_unlock(self, p: SimPage) -> None:
        p.locked, p.count = False, p.count - 1

    # -- the code under test
    def fill_ro_mpt(self, mfn: int) -> int | None:
        p = self.pages[mfn]
        self.counters["fill_calls"] += 1
        if self.rev == "prefix":
            p.slot = IDLE
            return None
        if p.slot:
            return 0
        p.slot = IDLE
        return 1

    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        p = self.pages[mfn]
        if p.validated:
            p.count += 1
            return 0
        start = p.nr_validated if p.partial else 0
        p.type, p.count = "l4", 1
        rc = 0
        for i in range(start, 512):
            if 256 <= i <= 271:
                continue
            r = self._take("get_page_from_l4e", i)
            rc = 1 if r is None else r
            if rc > 0:
                continue
            if rc == -ERESTART:
                p.nr_validated = i
            elif rc < 0 and i:
                p.nr_validated = i
                if rc == -EINTR:
                    rc = -ERESTART
            if rc < 0:
                break
        counted = self.rev != "prefix"
        if counted and (rc >= 0 or ("count_partial" in self.bugs and rc == -ERESTART)):
            self.nr_l4 += 1
        if rc >= 0:
            p.slot = IDLE if (self.vm_assist & M2P and self.pv and not self.pv32) else 0
            p.validated, p.partial, p.nr_validated = True, False, 512
            return 0
        if rc == -ERESTART:
            p.partial, p.demoting = True, False
        else:  # -EINTR before progress, or an error: get_page_type drops the type
            p.type, p.count, p.partial, p.nr_validated = "none", 0, False, 0
        return rc

    def unpin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        p = self.pages[mfn]
        if p.validated and p.count > 1:
            p.count -= 1
            return 0
        was_validated = p.validated
        top = 511 if p.validated else (p.nr_validated if p.demoting else p.nr_validated - 1)
        p.validated = False
        for i in range(top, -1, -1):
            if 256 <= i <= 271:
                continue
            r = self._take("put_page_from_l4e", i)
            if r is None:
                continue
            if r == -EINTR and i == top and was_validated:
                p.validated = True
                return -EINTR
            p.partial, p.demoting, p.nr_validated = True, True, i
            return -ERESTART
        p.type, p.count, p.partial, p.demoting, p.nr_validated = "none", 0, False, False, 0
        if self.rev != "prefix":
            self.nr_l4 -= 1  # on any success, as the devalidator does
        return 0

    def set_info_guest(self, *, vcpu: int = 0, vm_assist: int, self_domain: bool = False) -> int:
        if vcpu != 0:
            return 0
        if self.rev in ("prefix", "v1"):
            self.vm_assist = vm_assist
        if self.rev == "prefix":
            return 0
        other = not self_domain or "walk_scope" in self.bugs
        pv64 = self.pv and (not self.pv32 or "walk_scope" in self.bugs)
        if self.rev == "v1":
            cond = other and self.vm_assist & M2P and pv64 and self.nr_l4
        else:
            cond = other and not self.vm_assist & M2P and pv64 and vm_assist & M2P and self.nr_l4
        if cond:
            done, seen_l4, i = False, False, 0
            self.alloc_lock += 1
            while True:
                if not self.page_list:
                    raise make_failure(
                        HarnessCrash,
                        "NULL page from page_list_remove_head",
                        trace=["set_info_guest"],
                        location="domain.c:1095",
                    )
                mfn = self.page_list.pop(0)
                self.counters["list_removed"] += 1
                p = self.pages[mfn]
                if self._page_lock(p):
                    if p.type == "l4":
                        seen_l4 = True
                        done = not self.fill_ro_mpt(mfn)
                    self._page_unlock(p)
                i += 1
                check = "never_preempt" not in self.bugs and (
                    seen_l4 or "spin_without_l4" not in self.bugs
                )
                if done or (i % 256 == 0 and check and self._preempt()):
                    if done or "lose_page" not in self.bugs:
                        self.page_list.append(mfn)
                    break
                self.page_list.append(mfn)
                if i > 50 * len(self.pages) + 10000:
                    raise make_failure(HarnessHang, "time limit", trace=["set_info_guest"])
            if done or "no_unlock_on_restart" not in self.bugs:
                self.alloc_lock -= 1
            if not done:
                return -ERESTART
        if self.rev == "v2":
            self.vm_assist = vm_assist
        return 0

    def state(self) -> dict:
        return {
            "pages": [
                {
                    "mfn": p.mfn,
                    "type": p.type,
                    "validated": p.validated,
                    "partial": p.partial,
                    "count": p.count,
                    "locked": p.locked or p.held,
                    "slot": p.slot,
                }
                for p in self.pages
            ],
            "page_list": list(self.page_list),
            "nr_l4_pages": None if self.rev == "prefix" else self.nr_l4,
            "vm_assist": self.vm_assist,
            "idle_slot": IDLE,
            "locks": {"page_alloc_lock": self.alloc_lock, "page_locks_held": []},
            "counters": dict(self.counters),
            "map_balance": 0,
        }


def outcomes(target, tmp_path=None, **kw) -> dict:
    return check_target(target, tmp_path, **kw)


# --------------------------------------------------------------------------- revisions


@pytest.fixture(scope="module")
def runs() -> dict:
    return {rev: check_target(SimXen(rev), None) for rev in ("prefix", "v1", "v2")}


def test_prefix_fails_p1_only(runs):
    r = runs["prefix"]
    assert r["P1"].outcome is Outcome.FAIL
    assert "lack the RO_MPT slot" in r["P1"].detail
    ev = r["P1"].evidence
    assert ev and ev.trace[0].startswith("reset(5 pages")  # the smallest domain
    assert any(t.startswith("set_info_guest") for t in ev.trace)
    assert "nr_l4_pages=None" in ev.state
    for prop in ("P2", "P4", "P5", "P8"):
        assert r[prop].outcome is Outcome.PASS, (prop, r[prop].detail)
    assert r["P3"].outcome is Outcome.NA and r["P3"].detail.startswith("no restore walk")
    assert r["P6"].outcome is Outcome.NA and "no nr_l4_pages" in r["P6"].detail
    assert r["P7"].outcome is Outcome.NA


@pytest.mark.parametrize("rev", ["v1", "v2"])
def test_fixes_pass(runs, rev):
    r = runs[rev]
    for prop in ("P1", "P2", "P4", "P5", "P7", "P8"):
        assert r[prop].outcome is Outcome.PASS, (rev, prop, r[prop].detail, r[prop].evidence)
    # the livelock and the partial-release miscount: never "pass", never a failure
    for prop in ("P3", "P6"):
        assert r[prop].outcome is Outcome.ACCEPTED, (rev, prop, r[prop].detail)
    assert r["P9"].outcome is Outcome.NA  # no tree given


def _p4_rows(run):
    (f,) = [f for f in run["P4"].findings if f.title == "Pages walked during restore"]
    header, *rows = f.table
    return [dict(zip(header, row, strict=True)) for row in rows]


def test_p4_table_tells_v1_from_v2(runs):
    v1, v2 = _p4_rows(runs["v1"]), _p4_rows(runs["v2"])
    # legacy order, no preemption: both walk the whole domain (+1 to see a filled L4 for v1)
    for rows in (v1, v2):
        for r in rows:
            if r["order"] == "legacy" and r["preemption"] == "never":
                assert int(r["walked"]) >= int(r["pages"])
    # v2: no walk in v2 order, on repetition; v1 walks on repetition
    assert all(r["walked"] == "0" for r in v2 if r["order"] == "v2")
    assert all(r["on repeat"] == "0" for r in v2 if r["order"] != "v2 re-entered")
    assert any(r["on repeat"] not in ("", "0") for r in v1)
    # re-entered after a later preemption (Jan, 2 Feb): v1 walks again, v2 does not
    re1 = [r for r in v1 if r["order"] == "v2 re-entered"]
    re2 = [r for r in v2 if r["order"] == "v2 re-entered"]
    assert re1 and re2 and len(re1) == len(re2)
    assert all(int(r["on continuations"]) >= int(r["pages"]) for r in re1)
    assert all(r["on continuations"] == "0" for r in re2)
    # continuations with preemption pending: one batch per call
    big = [r for r in v2 if r["preemption"] == "always" and r["order"] == "legacy"]
    assert all(int(r["max per call"]) <= 256 for r in big)
    assert any(int(r["calls"]) > 1 for r in big)


def test_p7_finding_on_the_walks(runs):
    for rev in ("v1", "v2"):
        titles = [f.title for f in runs[rev]["P7"].findings]
        assert "Restore walk stops at a pre-filled L4" in titles, rev
        assert any("cleared again" in t for t in titles), rev
    m = check_target(M2PModel(), None, only=["P7"])["P7"]
    assert m.outcome is Outcome.PASS and not m.findings  # the specification has no such gap


def test_p3_livelock_is_an_accepted_deviation(runs):
    for rev in ("v1", "v2"):
        p3 = runs[rev]["P3"]
        assert p3.outcome is Outcome.ACCEPTED
        texts = [r.detail for r in p3.results if r.status == "accepted"]
        assert any("page_lock() unavailable" in t for t in texts), rev
        assert any("devalidation preempted" in t for t in texts), rev
        # says why it is accepted, and shows how it is reached
        assert "Why accepted: only the toolstack reaches it" in p3.detail
        assert p3.evidence and any(t.startswith("set_info_guest") for t in p3.evidence.trace)
    m = check_target(M2PModel(), None, only=["P3"])["P3"]
    assert m.outcome is Outcome.PASS and not m.findings


def test_p6_partial_release_is_an_accepted_deviation(runs):
    # the devalidator decrements for a partial validation never counted
    p6 = runs["v2"]["P6"]
    assert p6.outcome is Outcome.ACCEPTED
    assert "nr_l4_pages drops for an L4 that was never counted" in p6.detail
    assert "a guest can cause it" in p6.detail
    assert p6.evidence and p6.evidence.trace[-1].startswith("unpin_l4(2)")
    m = check_target(M2PModel(), None, only=["P6"])["P6"]
    assert m.outcome is Outcome.PASS


def test_accepted_is_named_and_never_fails_a_run():
    from verifier.model import ApplyResult, ApplyStatus, CheckResult, run_verdict

    c = CheckResult("P6", "t", base=Outcome.NA, patched=Outcome.ACCEPTED)
    assert c.change == "accepted deviation"
    assert run_verdict(ApplyResult(ApplyStatus.CLEAN, ""), [c]).value == "pass"


def test_differential_fixed(runs):
    res = run_pack(SimXen("prefix"), SimXen("v2"), None)
    by = {c.id: c for c in res}
    assert [c.id for c in res] == [f"P{i}" for i in range(1, 10)]
    assert by["P1"].change == "fixed"
    assert by["P1"].evidence is not None  # base's failure kept as evidence
    assert by["P2"].change == "pass"
    p4 = by["P4"].findings[0]
    assert {r[0].split(" ")[0] for r in p4.table[1:]} == {"base", "patched"}


def test_no_base(runs):
    res = run_pack(None, SimXen("v2"), None)
    assert all(c.base is Outcome.NA for c in res)


# --------------------------------------------------------------------------- buggy fixes


@pytest.mark.parametrize(
    ("bug", "prop", "words"),
    [
        ("no_unlock_on_restart", "P3", "page_alloc_lock still held"),
        ("never_preempt", "P3", "with preemption pending"),
        ("count_partial", "P6", "nr_l4_pages"),
        ("walk_scope", "P8", "walked"),
        ("lose_page", "P3", "lost mfn"),
        ("spin_without_l4", "P3", "does not terminate"),
    ],
)
def test_bug_caught_by_the_right_check(bug, prop, words):
    r = check_target(SimXen("v2", {bug}), None)
    assert r[prop].outcome is Outcome.FAIL, (bug, r[prop].detail)
    assert words in r[prop].detail, r[prop].detail
    assert r[prop].evidence and r[prop].evidence.trace
    # the happy path stays right: legacy restore without preemption still passes P1
    if bug != "walk_scope":
        assert r["P1"].outcome is Outcome.PASS, (bug, r["P1"].detail)


def test_bug_in_v1_too():
    r = check_target(SimXen("v1", {"never_preempt"}), None, only=["P3"])
    assert r["P3"].outcome is Outcome.FAIL


# --------------------------------------------------------------------------- harness errors


class Crashing(SimXen):
    def set_info_guest(self, **kw) -> int:
        raise make_failure(
            HarnessCrash,
            "SEGV in arch_set_info_guest",
            trace=["reset", "pin", "set"],
            location="xen/arch/x86/domain.c:1093",
            output="AddressSanitizer: SEGV on unknown address",
        )


class Broken(SimXen):
    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        raise HarnessError("role 'L4 validator' not found")


def test_crash_is_a_fail_with_evidence():
    r = check_target(Crashing("v2"), None, only=["P1", "P2"])
    assert r["P1"].outcome is Outcome.FAIL and "HarnessCrash" in r["P1"].detail
    assert r["P1"].evidence.locations == ("xen/arch/x86/domain.c:1093",)
    assert "AddressSanitizer" in r["P1"].evidence.output


def test_hang_is_does_not_terminate():
    class Hanging(SimXen):
        def set_info_guest(self, **kw) -> int:
            raise make_failure(HarnessHang, "timed out after 5 s", trace=["set_info_guest"])

    r = check_target(Hanging("v2"), None, only=["P1"])
    assert r["P1"].outcome is Outcome.FAIL and r["P1"].detail.count("does not terminate")


def test_harness_error_is_error():
    r = check_target(Broken("v2"), None, only=["P1", "P6"])
    assert r["P1"].outcome is Outcome.ERROR and "not found" in r["P1"].detail
    assert r["P6"].outcome is Outcome.ERROR


# --------------------------------------------------------------------------- mutation proof


def test_mutation_proof():
    proof = mutation_proof(SimXen("prefix"), as_is=SimXen("v2"))
    assert proof.p1_failed and proof.evidence.trace
    assert not mutation_proof(SimXen("v2")).p1_failed
    no_base = mutation_proof(SimXen("prefix"), as_is=SimXen("prefix"))
    assert not no_base.p1_failed and "unmutated" in no_base.detail


class Located(SimXen):
    def __init__(self, rev: str) -> None:
        super().__init__(rev)
        self.locations = {"restore fixup block": "xen/arch/x86/domain.c:1077-1117"}


def test_role_locations_in_evidence():
    r = check_target(Located("prefix"), None, only=["P1"])
    assert r["P1"].evidence.locations == ("xen/arch/x86/domain.c:1077-1117",)


class StickyInjections(SimXen):
    """An injection that stays armed until overwritten."""

    def _take(self, fn: str, i: int) -> int | None:
        e = self.inj.get(fn)
        return e[1] if e and e[0] == i else None


def test_sticky_injections_are_disarmed():
    r = check_target(StickyInjections("v2"), None, only=["P6"])
    assert r["P6"].outcome is Outcome.ACCEPTED, r["P6"].detail  # no failure from leftovers


def test_restore_legacy_scenario_trace():
    res = restore_legacy(SimXen("prefix"), {"nr_pages": 5})
    assert res.failed and res.trace == [
        "reset(5 pages, 64-bit PV, vm_assist=0)",
        "pin_l4(1) -> 0",
        "pin_l4(3) -> 0",
        "set_info_guest(vcpu=0, vm_assist=m2p_strict) -> 0",
    ]


# --------------------------------------------------------------------------- P9


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


FILLER_BOOL = "bool fill_ro_mpt(unsigned long mfn)\n{\n    return slot_was_empty(mfn);\n}\n"
HEADER_BOOL = "bool fill_ro_mpt(unsigned long mfn);\n"
USER = (
    "int restore(int x)\n{\n    bool done = false;\n\n    for ( ;; )\n    {\n"
    "        done = !fill_ro_mpt(x);\n        if ( done || x > 4 )\n            break;\n"
    "    }\n    return 0;\n}\n\nvoid load(int y)\n{\n    if ( y )\n        fill_ro_mpt(y);\n}\n"
)
FILLED_IS_TRUE = (True, "fixture: returns 1 on filling an empty slot, 0 on a set one")


def test_p9_pass_and_callers(tmp_path):
    tree = _tree(tmp_path, {"xen/arch/a.c": FILLER_BOOL + USER, "xen/include/m.h": HEADER_BOOL})
    r = check_callers(tree, FILLED_IS_TRUE)
    assert r.outcome is Outcome.PASS, r.detail
    rows = r.findings[0].table[1:]
    assert [(row[1], row[2]) for row in rows] == [("restore", "stops"), ("load", "ignored")]
    assert rows[0][0] == "xen/arch/a.c:11"
    assert "already set" in rows[0][3]


def test_p9_split_statements(tmp_path):
    split = (
        "void a(int x)\n{\n    fill_ro_mpt(\n        x);\n}\n"
        "int b(int x)\n{\n    int d =\n        !fill_ro_mpt(x);\n    if ( d )\n"
        "        return 0;\n    return 1;\n}\n"
    )
    r = check_callers(_tree(tmp_path, {"xen/a.c": FILLER_BOOL + split}), FILLED_IS_TRUE)
    assert r.outcome is Outcome.PASS, r.detail
    assert [row[2] for row in r.findings[0].table[1:]] == ["ignored", "stops"]


@pytest.mark.parametrize("use, words", [
    # filling an empty slot is the normal case: an error path on it is inverted
    ("    if ( fill_ro_mpt(x) )\n        return -EINVAL;\n", "when it fills an empty slot"),
    ("    if ( !fill_ro_mpt(x) )\n        goto fail;\n", "already set"),
    ("    bool f = fill_ro_mpt(x);\n    if ( f )\n        BUG();\n", "fills an empty slot"),
    # a walk that stops at the first L4 it fills leaves the rest empty
    ("    for ( ;; )\n        if ( fill_ro_mpt(x) )\n            break;\n", "first L4 it fills"),
])
def test_p9_inverted_use_fails(tmp_path, use, words):
    caller = "int c(int x)\n{\n" + use + "    return 0;\n}\n"
    r = check_callers(_tree(tmp_path, {"xen/a.c": FILLER_BOOL + caller}), FILLED_IS_TRUE)
    assert r.outcome is Outcome.FAIL, r.detail
    assert words in r.detail and "xen/a.c:" in r.detail


def test_p9_judges_against_the_measured_contract(tmp_path):
    tree = _tree(tmp_path, {"xen/a.c": FILLER_BOOL + USER})
    # the same caller is wrong when the definition returns false on filling
    r = check_callers(tree, (False, "returns 0 when it fills"))
    assert r.outcome is Outcome.FAIL and "first L4 it fills" in r.detail
    r = check_callers(tree, (None, "returns 1 on an empty slot and 1 on the slot it filled"))
    assert r.outcome is Outcome.FAIL and "1 callers rely on it" in r.detail
    r = check_callers(tree)  # not measured: a caller relying on the result is not judged
    assert r.outcome is Outcome.ERROR and "not measured" in r.detail


def test_p9_declaration_mismatch(tmp_path):
    tree = _tree(
        tmp_path,
        {
            "xen/arch/a.c": FILLER_BOOL + USER,
            "xen/include/m.h": "void fill_ro_mpt(unsigned long mfn);\n",
        },
    )
    r = check_callers(tree, FILLED_IS_TRUE)
    assert r.outcome is Outcome.FAIL and "xen/include/m.h:1" in r.detail


def test_p9_value_use_not_judged(tmp_path):
    odd = "int sum(int x)\n{\n    int y = 3 + fill_ro_mpt(x);\n    return y;\n}\n"
    r = check_callers(_tree(tmp_path, {"xen/a.c": FILLER_BOOL + odd}), FILLED_IS_TRUE)
    assert r.outcome is Outcome.ERROR and "3 + fill_ro_mpt" in r.detail


def test_p9_void_and_absent(tmp_path):
    void = "void fill_ro_mpt(unsigned long mfn)\n{\n    set(mfn);\n}\n"
    assert check_callers(_tree(tmp_path / "a", {"xen/a.c": void + USER})).outcome is Outcome.NA
    assert check_callers(_tree(tmp_path / "b", {"xen/a.c": "int x;\n"})).outcome is Outcome.NA
    with pytest.raises(VerifyError):
        check_callers(tmp_path / "missing")


@pytest.mark.parametrize("tree_fixture", [
    pytest.param("xen_tree_417", marks=pytest.mark.debian),
    pytest.param("xen_tree_414", marks=pytest.mark.debian),
    pytest.param("xen_tree_seed", marks=pytest.mark.upstream),
])
def test_p9_real_tree_with_fix(tree_fixture, request, test_cache):
    tree = request.getfixturevalue(tree_fixture)
    target = make_target(tree, revision="as is", cache=test_cache)
    try:
        contract = measure_fill_contract(target)
        r = check_target(target, tree, only=["P9"])["P9"]
    finally:
        target.close()
    assert contract[0] is True, contract  # the tree's own fill_ro_mpt, run
    assert r.outcome is Outcome.PASS, r.detail
    rows = r.findings[0].table[1:]
    assert {row[1] for row in rows} >= {"arch_set_info_guest", "new_guest_cr3"}
    # the restore walk stops on an already-set slot; the CR3 paths only need the fill
    assert any(row[1] == "arch_set_info_guest" and row[2] == "stops" for row in rows)
    assert all(row[2] == "ignored" for row in rows if row[1] == "new_guest_cr3")


@pytest.mark.upstream
def test_p9_real_tree_before_fix(xen_tree_pre):
    r = check_callers(xen_tree_pre)
    assert r.outcome is Outcome.NA and "void" in r.detail


# --------------------------------------------------------------------------- registry


def _patch(diff: str, subject: str = "x") -> Patch:
    return Patch(PatchMeta(subject, "t.diff", "diff"), diff, ())


def test_registry_and_recognition():
    assert PACK in all_packs()
    assert [c.id for c in PACK.checks] == [f"P{i}" for i in range(1, 10)]
    assert {r.name for r in PACK.roles} >= {"restore fixup block", "L4 validator"}
    mine = (
        "--- a/xen/arch/x86/mm.c\n+++ b/xen/arch/x86/mm.c\n@@ -1,3 +1,3 @@ int f(void)\n"
        " a\n-void fill_ro_mpt(unsigned long mfn);\n+bool fill_ro_mpt(unsigned long mfn);\n b\n"
    )
    other = (
        "--- a/xen/common/sched.c\n+++ b/xen/common/sched.c\n@@ -1,3 +1,3 @@ int g(void)\n"
        " a\n-int x;\n+long x;\n b\n"
    )
    assert packs_for(PatchSeries((_patch(mine),))) == [PACK]
    assert packs_for(PatchSeries((_patch(other),))) == []


def test_concerns_tree(tmp_path):
    tree = _tree(tmp_path, {"xen/arch/x86/domain.c": "if ( VM_ASSIST(d, m2p_strict) )\n"})
    assert PACK.concerns_tree(tree)
    assert not PACK.concerns_tree(tmp_path / "nothing")


def test_exhaustive_mode_on_prefix():
    r = check_target(SimXen("prefix"), None, exhaustive=True, only=["P1", "P3"])
    assert r["P1"].outcome is Outcome.FAIL
    assert r["P1"].evidence.trace == (
        "reset(5 pages, 64-bit PV, vm_assist=0)",
        "pin_l4(1) -> 0",
        "set_info_guest(vcpu=0, vm_assist=m2p_strict) -> 0",
    )
    assert r["P3"].outcome is Outcome.NA  # nothing to preempt without a walk


class NoHvmPins(SimXen):
    """A harness that cannot validate an L4 of an HVM domain (unmodelled callee)."""

    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        if not self.pv:
            raise make_failure(UnexpectedCall, "unexpected call to paging_mode_refcounts")
        return super().pin_l4(mfn, preemptible=preemptible)

    def reset(self, nr_pages: int, **kw) -> None:
        if nr_pages == 0 and hasattr(self, "pages"):
            raise HarnessError("the harness needs at least one page")
        super().reset(nr_pages, **kw)


def test_scope_without_hvm_pins_and_no_empty_domain():
    r = check_target(NoHvmPins("v2"), None, only=["P3", "P8"])
    assert r["P8"].outcome is Outcome.PASS, r["P8"].detail
    hvm = next(x for x in r["P8"].results if x.name == "an HVM domain")
    assert "paging_mode_refcounts" in hvm.metrics["pins_unavailable"]
    # a harness that cannot do what a scenario asks could not judge it: error, never n/a
    assert r["P3"].outcome is Outcome.ERROR and "at least one page" in r["P3"].detail


def test_seed_patch_concerns_the_pack():
    from tests.conftest import SEED_PAGE
    from verifier.patch import load_series

    if not SEED_PAGE.is_file():
        pytest.skip(f"seed page {SEED_PAGE} is absent")
    assert packs_for(load_series([str(SEED_PAGE)])) == [PACK]


# --------------------------------------------------------------------------- checkouts


def _git_checkout(tmp_path: Path):
    """A one-commit repository with a void fill_ro_mpt; the worktree then 'patched'."""
    import subprocess
    from types import SimpleNamespace

    repo = _tree(tmp_path / "repo", {"xen/arch/a.c": FILLER_BOOL.replace("bool", "void")})
    env = {
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
        "HOME": str(tmp_path),
        "PATH": "/usr/bin:/bin",
    }
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "base"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env)
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    (repo / "xen/arch/a.c").write_text(FILLER_BOOL + USER)
    return SimpleNamespace(path=repo, commit=sha, ref="HEAD",
                           source=SimpleNamespace(location=str(repo)))


def test_run_on_checkout_with_factory(tmp_path):
    from verifier.packs.m2p_strict.checks import run_on_checkout

    made = []

    def factory(tree: Path, *, revision: str, cache: Path, mutate: str | None = None,
                commit: str = "", label: str = ""):
        assert commit.startswith(co.commit[:12]) and label.startswith("HEAD (")
        rev = "prefix" if revision.startswith("base") or mutate else "v2"
        t = SimXen(rev)
        t.close = lambda: made.append(revision)
        return t

    co = _git_checkout(tmp_path)
    run = run_on_checkout(co, applied=True, cache=tmp_path, factory=factory)
    by = {c.id: c for c in run.checks}
    assert by["P1"].change == "fixed" and by["P2"].change == "pass"
    assert by["P9"].base is Outcome.NA and by["P9"].patched is Outcome.PASS
    assert {c.pack for c in run.checks} == {"m2p-strict"}
    assert sorted(made) == sorted(["patched", f"base {co.commit[:12]}"])  # closed
    assert run.limits is not None and run.limits.pack == "m2p-strict"
    assert any("vcpu_id == 0" in x for x in run.limits.not_exercised)
    run = PACK.run_on_checkout(co, applied=False, cache=tmp_path)
    assert {c.patched for c in run.checks} == {Outcome.ERROR}  # P9 too: nothing measured
    assert any("no harness" in n for n in run.notes)
    run = run_on_checkout(co, applied=False, cache=tmp_path, factory=factory)
    assert any("mutation proof: P1 fails with the fixup disabled" in n for n in run.notes)
