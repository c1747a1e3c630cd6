"""The generated harness: real Xen functions run in userspace, and the failure classes.

Failure classes use tiny C fixtures of our own (``tests/c/``, not Xen text) built
through the same generate -> build -> run path as a tree's harness. The real-code
tests need trees: ``XEN_TREE_417``/``XEN_TREE_414``/``XEN_TREE_PRE``/``XEN_TREE_SEED``
name existing directories, otherwise the conftest fixtures provide them (Debian
downloads, ``XEN_GIT``) or skip.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from verifier import harness
from verifier.target import (
    HarnessCrash,
    HarnessError,
    HarnessHang,
    HarnessTarget,
    ListCorruption,
    LockImbalance,
    Target,
    UnexpectedCall,
    open_target,
)

C = Path(__file__).resolve().parent / "c"
CONSTS = (C / "consts.h").read_text()
TIME_LIMIT = 3.0


@pytest.fixture(scope="session")
def harness_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("harness-cache")


def fixture_target(name: str, cache: Path) -> HarnessTarget:
    return open_target(
        None,
        cache,
        pieces=harness.fixture_pieces(C / f"{name}.c"),
        constants_text=CONSTS,
        label=name,
        timeout=TIME_LIMIT,
    )


# --------------------------------------------------------------------------- failure classes


def test_fixture_good_behaves(harness_cache: Path) -> None:
    with fixture_target("good", harness_cache) as t:
        assert isinstance(t, Target)
        t.reset(3)
        assert t.fill_ro_mpt(1) == 1
        assert t.fill_ro_mpt(1) == 0
        st = t.state()
        assert st["pages"][1]["slot"] == st["idle_slot"] != 0
        assert st["pages"][0]["slot"] == 0
        assert st["map_balance"] == 0
        assert st["page_list"] == [0, 1, 2]


def test_spin_forever_is_a_hang(harness_cache: Path) -> None:
    with fixture_target("spin", harness_cache) as t:
        t.reset(2)
        t0 = time.monotonic()
        with pytest.raises(HarnessHang) as ei:
            t.fill_ro_mpt(0)
        assert time.monotonic() - t0 < TIME_LIMIT + 2
        assert ei.value.trace[-1] == "fill 0"
        assert ei.value.last_op == "fill 0"


def test_segfault_is_a_crash_with_location(harness_cache: Path) -> None:
    with fixture_target("segv", harness_cache) as t:
        t.reset(2)
        with pytest.raises(HarnessCrash) as ei:
            t.fill_ro_mpt(1)
        assert "SEGV" in str(ei.value)
        assert ei.value.location and ei.value.location.startswith(str(C / "segv.c"))
        assert "AddressSanitizer" in ei.value.output
        # the process is gone: the target says so instead of hanging ...
        with pytest.raises(HarnessError):
            t.fill_ro_mpt(1)
        # ... and the next scenario's reset starts a fresh one
        t.reset(2)
        assert t.restarts == 1 and t.state()["page_list"] == [0, 1]


def test_out_of_bounds_is_a_sanitizer_report(harness_cache: Path) -> None:
    with fixture_target("overflow", harness_cache) as t:
        t.reset(2)
        with pytest.raises(HarnessCrash) as ei:
            t.fill_ro_mpt(1)
        assert "out of bounds" in str(ei.value)
        assert ei.value.location == f"{C / 'overflow.c'}:7"


def test_unmodelled_call_is_reported_by_name(harness_cache: Path) -> None:
    with fixture_target("unmodelled", harness_cache) as t:
        assert "frobnicate_p2m" in t.built.sources.stubs
        t.reset(2)
        with pytest.raises(UnexpectedCall) as ei:
            t.fill_ro_mpt(0)
        assert ei.value.name == "frobnicate_p2m"


def test_lock_left_held_is_an_imbalance(harness_cache: Path) -> None:
    with fixture_target("lockheld", harness_cache) as t:
        t.reset(2)
        with pytest.raises(LockImbalance) as ei:
            t.fill_ro_mpt(1)
        assert "page_alloc_lock" in str(ei.value)


def test_cycled_page_list_is_corruption(harness_cache: Path) -> None:
    with fixture_target("listloss", harness_cache) as t:
        t.reset(3)
        with pytest.raises(ListCorruption):
            t.fill_ro_mpt(1)


def test_compile_error_points_at_the_source_line(harness_cache: Path) -> None:
    with pytest.raises(HarnessError) as ei:
        fixture_target("broken", harness_cache)
    assert f"{C / 'broken.c'}:4" in str(ei.value)


def test_bad_operands_are_refused_not_crashes(harness_cache: Path) -> None:
    with fixture_target("good", harness_cache) as t:
        t.reset(2)
        with pytest.raises(HarnessError):
            t.fill_ro_mpt(5)
        with pytest.raises(HarnessError):
            t.set_preempt("sometimes")
        with pytest.raises(HarnessError):
            t.reset(10**6)
        assert t.fill_ro_mpt(1) == 1  # still alive


def test_build_is_cached_by_content(harness_cache: Path) -> None:
    with fixture_target("good", harness_cache) as a:
        first = a.built.exe
    with fixture_target("good", harness_cache) as b:
        assert b.built.cached and b.built.exe == first


# --------------------------------------------------------------------------- real trees


def _tree(request: pytest.FixtureRequest, env: str, fixture: str) -> Path:
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not (path / "xen" / "arch" / "x86").is_dir():
            pytest.skip(f"{env}={path} is not a Xen tree")
        return path
    try:
        return request.getfixturevalue(fixture)
    except pytest.FixtureLookupError:
        pytest.skip(f"{env} is not set and there is no {fixture} fixture")


TREES = {
    "417": ("XEN_TREE_417", "xen_tree_417"),
    "414": ("XEN_TREE_414", "xen_tree_414"),
    "pre": ("XEN_TREE_PRE", "xen_tree_pre"),
    "seed": ("XEN_TREE_SEED", "xen_tree_seed"),
    "46": ("XEN_TREE_46", "xen_tree_46"),
}
_targets: dict[str, HarnessTarget] = {}


@pytest.fixture(scope="module")
def real() -> object:
    yield _targets
    for t in _targets.values():
        t.close()
    _targets.clear()


def target_for(which: str, request: pytest.FixtureRequest, cache: Path, real) -> HarnessTarget:
    if which not in real:
        env, fixture = TREES[which]
        real[which] = open_target(_tree(request, env, fixture), cache, label=which)
    return real[which]


def strict(t: HarnessTarget) -> int:
    return 1 << t.constants["m2p_strict_bit"]


FIXED = ["417", "414", "seed", "46"]


@pytest.mark.parametrize("which", FIXED)
def test_real_fill_ro_mpt_fills_only_an_empty_slot(which, request, harness_cache, real) -> None:
    t = target_for(which, request, harness_cache, real)
    t.reset(3)
    assert t.fill_ro_mpt(0) == 1  # empty slot: filled, reports it
    idle = t.state()["idle_slot"]
    assert t.state()["pages"][0]["slot"] == idle
    assert t.fill_ro_mpt(0) == 0  # already filled: nothing to do
    t.set_slot(1, 0x1234067)
    assert t.fill_ro_mpt(1) == 0  # a foreign non-zero value is left alone
    st = t.state()
    assert st["pages"][1]["slot"] == 0x1234067
    assert st["pages"][2]["slot"] == 0
    assert st["map_balance"] == 0


def test_real_fill_ro_mpt_before_the_fix_is_void(request, harness_cache, real) -> None:
    t = target_for("pre", request, harness_cache, real)
    t.reset(2)
    t.set_slot(1, 0x1234067)
    assert t.fill_ro_mpt(1) is None
    assert t.fill_ro_mpt(0) is None
    st = t.state()
    assert st["pages"][0]["slot"] == st["pages"][1]["slot"] == st["idle_slot"]  # overwrites


def _legacy_restore(t: HarnessTarget, l4s: list[int], nr: int = 40) -> dict:
    """Pin L4s with m2p_strict clear, then load vCPU 0's context with it set."""
    t.reset(nr)
    for m in l4s:
        assert t.pin_l4(m) == 0
    assert all(t.state()["pages"][m]["slot"] == 0 for m in l4s)
    rc = t.set_info_guest(vm_assist=strict(t))
    while rc == -t.constants["ERESTART"]:
        rc = t.set_info_guest(vm_assist=strict(t))
    assert rc == 0
    return t.state()


@pytest.mark.parametrize("which", FIXED)
def test_real_fixup_fills_every_l4(which, request, harness_cache, real) -> None:
    t = target_for(which, request, harness_cache, real)
    assert t.constants["has_fixup_walk"]
    l4s = [2, 5, 6, 31]
    st = _legacy_restore(t, l4s)
    assert [st["pages"][m]["slot"] for m in l4s] == [st["idle_slot"]] * len(l4s)
    assert all(p["slot"] == 0 for p in st["pages"] if p["mfn"] not in l4s)
    assert st["vm_assist"] & strict(t)
    assert sorted(st["page_list"]) == list(range(40))
    assert st["locks"] == {"page_alloc_lock": 0, "page_locks_held": []}
    assert st["nr_l4_pages"] == len(l4s)
    # the walk called the real fill_ro_mpt on every L4 (and stopped at a filled one)
    assert st["counters"]["fill_calls"] >= len(l4s)
    assert t.locations["restore fixup block"].startswith("xen/arch/x86/domain.c:")


def test_real_prefix_leaves_slots_empty(request, harness_cache, real) -> None:
    t = target_for("pre", request, harness_cache, real)
    assert not t.constants["has_fixup_walk"]
    st = _legacy_restore(t, [2, 5, 6])
    assert [st["pages"][m]["slot"] for m in (2, 5, 6)] == [0, 0, 0]
    assert st["vm_assist"] & strict(t)  # the flag is set, the L4s are not fixed
    assert st["counters"]["list_removed"] == 0


@pytest.mark.parametrize("which", FIXED)
def test_real_fixup_preempts_and_continues(which, request, harness_cache, real) -> None:
    t = target_for(which, request, harness_cache, real)
    t.reset(600)
    for m in (1, 300, 599):
        t.pin_l4(m)
    t.set_preempt("always")
    rc = t.set_info_guest(vm_assist=strict(t))
    assert rc == -t.constants["ERESTART"]
    st = t.state()
    assert st["counters"]["list_removed"] == 256  # one batch, then the preemption check
    assert st["locks"]["page_alloc_lock"] == 0
    t.set_preempt("never")
    assert t.set_info_guest(vm_assist=strict(t)) == 0
    st = t.state()
    assert all(st["pages"][m]["slot"] == st["idle_slot"] for m in (1, 300, 599))
    assert sorted(st["page_list"]) == list(range(600))


@pytest.mark.parametrize("which", FIXED)
def test_real_fixup_skips_a_page_it_cannot_lock(which, request, harness_cache, real) -> None:
    t = target_for(which, request, harness_cache, real)
    t.reset(8)
    for m in (1, 3, 5):
        t.pin_l4(m)
    t.hold_page_lock(3)
    assert t.set_info_guest(vm_assist=strict(t)) == 0
    st = t.state()
    assert [st["pages"][m]["slot"] for m in (1, 3, 5)] == [st["idle_slot"], 0, st["idle_slot"]]


@pytest.mark.parametrize("which", FIXED)
def test_real_fixup_leaves_own_and_32bit_domains_alone(which, request, harness_cache, real):
    t = target_for(which, request, harness_cache, real)
    t.reset(4)
    t.pin_l4(1)
    assert t.set_info_guest(vm_assist=strict(t), self_domain=True) == 0
    assert t.state()["pages"][1]["slot"] == 0
    t.reset(4, pv32=True)
    t.pin_l4(1)
    assert t.set_info_guest(vm_assist=strict(t)) == 0
    assert t.state()["pages"][1]["slot"] == 0


def test_write_harness_rebuilds_by_hand(request, tmp_path) -> None:
    tree = _tree(request, *TREES["417"])
    out = harness.write_harness(tree, tmp_path / "h", commit="deadbeef")
    assert {"env.h", "pieces.c", "driver.c", "build.sh"} <= {p.name for p in out.iterdir()}
    pieces = (out / "pieces.c").read_text()
    assert '#line' in pieces and '"xen/arch/x86/mm.c"' in pieces and "deadbeef" in pieces
    assert len((out / "env.h").read_text().splitlines()) < 300  # readable in one sitting
    proc = subprocess.run(["sh", str(out / "build.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (out / "driver").exists()


def test_emulated_validator_refuses_injection(request, harness_cache) -> None:
    tree = _tree(request, *TREES["417"])
    with open_target(tree, harness_cache, real_pin=False) as t:
        assert "pin_l4" in t.emulated
        with pytest.raises(HarnessError, match="emulates"):
            t.inject("get_page_from_l4e", entry=3, rc=-t.constants["ERESTART"])


@pytest.mark.parametrize("which", ["417", "414", "pre", "seed"])
def test_real_validator_contract(which, request, harness_cache, real) -> None:
    t = target_for(which, request, harness_cache, real)
    assert t.real_pin and not t.emulated
    restart, counter = -t.constants["ERESTART"], t.constants["has_counter"]
    t.reset(6)
    assert t.pin_l4(1) == 0
    assert t.state()["pages"][1]["slot"] == 0  # m2p_strict clear: created without the slot
    t.reset(6, vm_assist=strict(t))
    assert t.pin_l4(1) == 0
    st = t.state()
    assert st["pages"][1]["slot"] == st["idle_slot"]  # set: created with it
    assert st["nr_l4_pages"] == (1 if counter else None)
    # preempted validation: partial, not counted; resuming completes it
    t.inject("get_page_from_l4e", entry=5, rc=restart)
    assert t.pin_l4(2) == restart
    p = t.state()["pages"][2]
    assert p["partial"] and not p["validated"]
    assert t.state()["nr_l4_pages"] == (1 if counter else None)
    assert t.pin_l4(2) == 0
    assert t.state()["nr_l4_pages"] == (2 if counter else None)
    # a failure drops the type and is not counted
    t.inject("get_page_from_l4e", entry=7, rc=-22)
    assert t.pin_l4(3) == -22
    assert t.state()["pages"][3]["type"] == "none"
    # preempted devalidation, then resumed
    t.inject("put_page_from_l4e", entry=3, rc=restart)
    assert t.unpin_l4(2) == restart
    assert t.state()["pages"][2]["partial"]
    assert t.unpin_l4(2) == 0
    st = t.state()
    assert st["pages"][2]["type"] == "none"
    assert st["nr_l4_pages"] == (1 if counter else None)
    assert st["map_balance"] == 0


def test_large_domain_and_repeated_pin(request, harness_cache, real) -> None:
    t = target_for("417", request, harness_cache, real)
    t.reset(16384)
    assert t.pin_l4(16383) == 0 and t.pin_l4(16383) == 0
    assert t.state()["pages"][16383]["count"] == 2
    assert t.unpin_l4(16383) == 0
    assert t.state()["pages"][16383]["count"] == 1
    assert t.unpin_l4(16383) == 0
    st = t.state()
    assert st["pages"][16383]["type"] == "none" and st["nr_l4_pages"] == 0


def test_make_target_mutation_disables_the_fill(request, tmp_path) -> None:
    from verifier.target import make_target

    tree = _tree(request, *TREES["417"])
    with make_target(tree, revision="as is", cache=tmp_path, mutate="no-fixup") as t:
        assert t.revision == "as is [no-fixup]"
        st = _legacy_restore(t, [3, 4])
        assert [st["pages"][m]["slot"] for m in (3, 4)] == [0, 0]
    with pytest.raises(HarnessError, match="unknown mutation"):
        make_target(tree, revision="x", cache=tmp_path, mutate="bogus")
    with pytest.raises(HarnessError, match="not a Xen tree"):
        make_target(tmp_path, revision="x", cache=tmp_path)
