"""The reference model (the specification) and the stateful / exhaustive drivers."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.test_m2p_checks import SimXen
from verifier.packs.m2p_strict.model import (
    BATCH,
    EINTR,
    ERESTART,
    IDLE_SLOT,
    M2PModel,
    ModelError,
    m2p_mask,
)
from verifier.packs.m2p_strict.scenarios import (
    ScenarioFailure,
    compare_states,
    exhaustive_orders,
    l4_layout,
)
from verifier.packs.m2p_strict.stateful import machine_for

M2P = m2p_mask()


def slots(m: M2PModel) -> dict[int, int]:
    return {p["mfn"]: p["slot"] for p in m.state()["pages"] if p["validated"]}


def test_validation_follows_the_flag():
    m = M2PModel()
    m.reset(4)
    assert m.pin_l4(1) == 0
    m.set_info_guest(vm_assist=M2P, self_domain=True)  # own context: no walk
    assert m.pin_l4(2) == 0
    assert slots(m) == {1: 0, 2: IDLE_SLOT}
    assert m.nr_l4_pages == 2 and m.state()["nr_l4_pages"] == 2


def test_switching_on_fills_every_validated_l4():
    m = M2PModel()
    m.reset(10)
    for mfn in (2, 5, 9):
        m.pin_l4(mfn)
    assert m.set_info_guest(vm_assist=M2P) == 0
    assert set(slots(m).values()) == {IDLE_SLOT}
    assert m.vm_assist == M2P
    assert m.counters["list_removed"] == 10  # one round of the list
    assert m.page_list == list(range(10))  # rotated once round: the same order


@pytest.mark.parametrize(
    ("pv", "pv32", "own", "vcpu"),
    [
        (True, True, False, 0),
        (False, False, False, 0),
        (True, False, True, 0),
        (True, False, False, 1),
    ],
)
def test_out_of_scope_untouched(pv, pv32, own, vcpu):
    m = M2PModel()
    m.reset(6, pv=pv, pv32=pv32)
    m.pin_l4(3)
    m.set_info_guest(vcpu=vcpu, vm_assist=M2P, self_domain=own)
    assert slots(m) == {3: 0}
    assert m.counters["list_removed"] == 0
    assert (m.vm_assist == M2P) == (vcpu == 0)


def test_preemption_one_batch_per_call_and_flag_after():
    m = M2PModel()
    m.reset(1000)
    for mfn in l4_layout(1000):
        m.pin_l4(mfn)
    m.set_preempt("always")
    calls, walked = 0, []
    while True:
        before = m.counters["list_removed"]
        rc = m.set_info_guest(vm_assist=M2P)
        walked.append(m.counters["list_removed"] - before)
        calls += 1
        if rc == 0:
            break
        assert rc == -ERESTART and m.vm_assist == 0  # the flag waits for the walk
    assert walked == [BATCH, BATCH, BATCH, 1000 - 3 * BATCH]
    assert set(slots(m).values()) == {IDLE_SLOT} and m.vm_assist == M2P


def test_held_lock_skipped():
    m = M2PModel()
    m.reset(8)
    m.pin_l4(2)
    m.pin_l4(6)
    m.hold_page_lock(2)
    assert m.set_info_guest(vm_assist=M2P) == 0
    assert slots(m) == {2: 0, 6: IDLE_SLOT}


def test_counter_contract():
    m = M2PModel()
    m.reset(6)
    m.inject("get_page_from_l4e", entry=5, rc=-ERESTART)
    assert m.pin_l4(1) == -ERESTART and m.nr_l4_pages == 0
    assert m.pin_l4(1) == 0 and m.nr_l4_pages == 1
    m.inject("get_page_from_l4e", entry=0, rc=-EINTR)
    assert m.pin_l4(2) == -EINTR and m.state()["pages"][2]["type"] == "none"
    m.inject("get_page_from_l4e", entry=7, rc=-EINTR)
    assert m.pin_l4(2) == -ERESTART and m.state()["pages"][2]["partial"]
    m.inject("get_page_from_l4e", entry=7, rc=-22)
    assert m.pin_l4(2) == -22 and m.nr_l4_pages == 1  # failure while continuing: dropped
    m.inject("put_page_from_l4e", entry=511, rc=-EINTR)
    assert m.unpin_l4(1) == -EINTR and m.state()["pages"][1]["validated"]
    m.inject("put_page_from_l4e", entry=100, rc=-ERESTART)
    assert m.unpin_l4(1) == -ERESTART
    assert m.nr_l4_pages == 1 == m.expected_nr_l4()  # being devalidated: still counted
    assert m.unpin_l4(1) == 0 and m.nr_l4_pages == 0
    with pytest.raises(ModelError):
        m.unpin_l4(1)
    with pytest.raises(ModelError):
        m.set_preempt("sometimes")


def test_compare_states_reports_differences():
    a, b = M2PModel(), M2PModel()
    for m in (a, b):
        m.reset(4)
        m.pin_l4(1)
    b.set_info_guest(vm_assist=M2P)
    diffs = compare_states(a.state(), b.state())
    assert any("RO_MPT slot is empty" in d for d in diffs)
    assert any("d->vm_assist" in d for d in diffs)
    assert compare_states(b.state(), b.state()) == []


def test_layout():
    assert l4_layout(5) == [1, 3]
    lay = l4_layout(20000)
    assert len(lay) == 8 and 0 not in lay and max(lay) < 20000
    assert l4_layout(1) == []


# --------------------------------------------------------------------------- stateful


FAST = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    derandomize=True,  # reproducible in CI; the seed is Hypothesis' own
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(
    ("rev", "own", "pages"),
    [("v2", True, 6), ("v2", True, 300), ("v1", False, 6), ("v1", False, 300)],
)
def test_stateful_fix_matches_model(rev, own, pages):
    machine = machine_for(lambda: SimXen(rev), self_context=own, nr_pages=pages)
    run_state_machine_as_test(machine, settings=FAST)


def test_stateful_model_against_itself_pv32():
    run_state_machine_as_test(machine_for(M2PModel, pv32=True), settings=FAST)


@pytest.mark.parametrize(
    ("bug", "shrink"), [("count_partial", True), ("no_unlock_on_restart", False)]
)
def test_stateful_catches_bug(bug, shrink):
    phases = list(Phase) if shrink else [Phase.explicit, Phase.generate]
    with pytest.raises(ScenarioFailure):
        run_state_machine_as_test(
            machine_for(lambda: SimXen("v2", {bug}), nr_pages=300),
            settings=settings(FAST, max_examples=1000, stateful_step_count=30, phases=phases),
        )


# --------------------------------------------------------------------------- exhaustive


def test_exhaustive_orders():
    ok = exhaustive_orders(SimXen("v2"), sizes=(5, 300))
    assert len(ok) == 2 * 24 * 4  # 4! orders of 3 pins + set-context, 4 preemption scripts
    assert all(r.status == "pass" for r in ok), [r.detail for r in ok if r.failed][:3]
    bad = exhaustive_orders(SimXen("prefix"), sizes=(5,), preempts=(("never", 0),))
    failed = [r for r in bad if r.failed]
    # pre-fix: every order with a pin before the set-context fails, the rest passes
    assert len(failed) == 24 - 6 and all(r.prop == "P1" for r in failed)
    assert all("order ctx" not in r.name for r in failed)
    two = exhaustive_orders(SimXen("v1"), sizes=(5,), contexts=2, preempts=(("never", 0),))
    assert len(two) == 60 and all(r.status == "pass" for r in two)  # 5!/2! orders
