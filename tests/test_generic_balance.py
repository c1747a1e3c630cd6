"""Generic BALANCE mechanics on made-up C (tests/c/generic): lifting, stubs, the
resource model, path exploration and the differential judging. No Xen code."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from verifier.generic import balance, explore, lift, resources
from verifier.generic.balance_check import touched_functions

TOY = Path(__file__).resolve().parent / "c" / "generic"
FUNCS = ["take_two", "lock_if_ready", "mapper", "uses_current", "double_take", "locks_page",
         "page_lock", "fill_table", "overruns_own", "beyond_a_page", "global_gate",
         "bitmap_user", "shifts_by_state", "overruns_allocation", "reads_const_table"]

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _lift(tmp: Path, buggy: bool) -> lift.Lifted:
    argv = ("gcc", "-std=gnu11", "-O2", "-Werror", f"-I{TOY / 'include'}", "-include",
            "xen/config.h", *(("-DBUGGY",) if buggy else ()), "-c", "unit.c", "-o", "unit.o")
    return lift.lift(TOY, "unit.c", argv, TOY, FUNCS, tmp, "toy-buggy" if buggy else "toy")


def _judge(lifted: lift.Lifted, fn: str, contract=None):
    model = resources.load()
    d = explore.Driver(lifted, model)
    try:
        ex = explore.explore(d, fn)
        judged = balance.judge_paths(lifted.types, model, fn, ex, lifted.symbols)
        learnt = balance.learn(judged)
        sym = explore.Symbolizer(lifted.exe, TOY, TOY)
        sym.lookup([c.site for p in ex.paths for c in p.calls]
                   + [pc for p in ex.paths for pc in p.last_pcs])
        vs = balance.violations(judged, contract or learnt, sym, lambda c: c.stub, ex.states)
        return ex, vs, learnt
    finally:
        d.close()


@pytest.fixture(scope="module")
def lifted_pair(tmp_path_factory) -> tuple[lift.Lifted, lift.Lifted]:
    tmp = tmp_path_factory.mktemp("generic")
    return _lift(tmp, False), _lift(tmp, True)


def test_lift_stubs_externals_and_keeps_unit_functions(lifted_pair):
    good, _ = lifted_pair
    names = {s.label for s in good.stubs if s.kind == "func"}
    assert {"_spin_lock", "_spin_unlock", "get_page", "put_page", "map_domain_page"} <= names
    assert set(FUNCS) <= set(good.functions)
    assert good.exe.exists()


def test_model_files_load_with_pairs():
    m = resources.load()
    assert any(r.kind == "acquire" for r in m.for_fn("__get_gfn_type_access"))
    assert any(r.kind == "release" for r in m.for_fn("__put_gfn"))
    trylock = next(r for r in m.for_fn("_spin_trylock") if r.kind == "acquire")
    assert trylock.holds == "rc != 0"
    assert resources.holds(trylock, 0) is False and resources.holds(trylock, 1) is True


def test_error_path_leak_found_and_named_fixed(lifted_pair):
    good, bad = lifted_pair
    ex_b, vb, contract = _judge(bad, "take_two")
    _, vp, _ = _judge(good, "take_two", contract)
    nvar = len(explore.variants())
    assert len(ex_b.paths) == 2 * nvar and ex_b.complete  # get_page true / false, per state
    assert [v.kind for v in vb] == ["leak"]  # once, though every state has the path
    assert vb[0].resource.startswith("spin lock") and vb[0].rc.startswith("-22")
    assert vb[0].acquired_at.startswith("unit.c:")
    ret = 1 + next(i for i, ln in enumerate((TOY / "unit.c").read_text().splitlines())
                   if "return -EINVAL;" in ln)
    assert vb[0].returned_at == f"unit.c:{ret}"  # the return statement, not the epilogue
    assert vp == []
    assert balance.change(vb, vp) == "fixed"
    assert balance.change(vp, vb) == "REGRESSION"


def test_success_return_holding_is_the_contract(lifted_pair):
    good, _ = lifted_pair
    ex, vs, contract = _judge(good, "lock_if_ready")
    assert len(ex.paths) == 2 * len(explore.variants())
    assert vs == []
    assert any(r == "spin lock" for _, r, _ in contract.held)


def test_mapping_matched_by_address_and_inline_rwlock_hooks(lifted_pair):
    good, bad = lifted_pair
    ex, vs, _ = _judge(good, "mapper")
    assert vs == []
    hooks = {c.stub for p in ex.paths for c in p.calls if c.hook}
    assert {"read_lock", "read_unlock"} <= hooks  # the overlay's shadow rwlock.h
    _, vb, _ = _judge(bad, "mapper")
    assert {v.resource.split(" (")[0] for v in vb} == {"domain page mapping"}


def test_current_is_exact_and_allocation_failure_explored(lifted_pair):
    good, _ = lifted_pair
    ex, vs, _ = _judge(good, "uses_current")
    # current is never NULL; in the zeroed state the BUG() on domain_id is not reached,
    # in the HVM state (domain_id 1) it is: current->domain is the catalogue's domain
    assert {p.outcome for p in ex.paths if p.variant == 0} == {"return"}
    assert {p.outcome for p in ex.paths if p.variant == 1} == {"bug", "return"}
    assert len({len(p.calls) for p in ex.paths if p.variant == 0}) == 2  # NULL and object
    assert vs == []


def test_double_acquire(lifted_pair):
    _, bad = lifted_pair
    _, vb, _ = _judge(bad, "double_take")
    assert "double-acquire" in {v.kind for v in vb}


def test_touched_functions_by_body():
    a = b"int f(void)\n{\n    return 0;\n}\n\nint g(void)\n{\n    return 1;\n}\n"
    b = b"int f(void)\n{\n    return 0;\n}\n\n\nint g(void)\n{\n    return 2;\n}\n"
    assert touched_functions(a, b) == ["g"]
    assert touched_functions(a, a) == []


def test_modelled_function_defined_in_the_unit_is_a_stub_for_its_callers(lifted_pair):
    good, bad = lifted_pair
    ex, vs, contract = _judge(good, "locks_page")
    # the unit's own page_lock (which fails on a zeroed page) is replaced by a choice
    assert len(ex.paths) == 2 * len(explore.variants()) and vs == []
    _, vb, _ = _judge(bad, "locks_page", contract)  # good as base: its contract holds
    assert {v.kind for v in vb} == {"leak"} and all("page lock" in v.resource for v in vb)
    # the definition itself stays callable (its real body runs)
    ex, _, _ = _judge(good, "page_lock")
    assert {p.rc for p in ex.paths} == {0}


def test_generic_limits_say_what_balance_rests_on():
    from verifier.generic import generic_limits
    from verifier.model import FunctionResult, Sides

    assert generic_limits(()) is None
    assert generic_limits((FunctionResult("f", "xen/common/a.c", False, "inline asm"),)) is None
    lim = generic_limits((
        FunctionResult("g", "xen/common/b.c", True, paths=Sides(3, 4)),
        FunctionResult("f", "xen/common/a.c", False, "inline asm"),
    ))
    assert lim.pack == "generic"
    assert any("xen/common/b.c" in v for v in lim.verbatim)
    assert not any("xen/common/a.c" in v for v in lim.verbatim)  # not lifted: not "ran"
    # the model's families, read from its files
    assert any("spin lock" in m and "gfn lock" in m for m in lim.modelled)
    assert any("no two globals are set together" in n for n in lim.not_exercised)


def test_pointer_argument_is_a_page_and_its_overrun_is_not_judged(lifted_pair):
    good, _ = lifted_pair
    # a table argument indexed within a page runs: no sanitizer report
    ex, vs, _ = _judge(good, "fill_table")
    assert {p.outcome for p in ex.paths} == {"return"} and vs == []
    # past the page: the harness guessed the object's size; the path is not judged
    ex, vs, _ = _judge(good, "beyond_a_page")
    assert {p.outcome for p in ex.paths} == {"entry-object"} and vs == []
    # an overrun of the code's own buffer is a violation, placed on the writing line
    ex, vs, _ = _judge(good, "overruns_own")
    assert {p.outcome for p in ex.paths} == {"sanitizer"}
    line = 1 + next(i for i, ln in enumerate((TOY / "unit.c").read_text().splitlines())
                    if "buf[n + 16] = 1;" in ln)
    assert {(v.kind, v.returned_at) for v in vs} == {("sanitizer", f"unit.c:{line}")}


def test_a_branch_on_global_data_is_taken_in_a_global_state(lifted_pair):
    good, bad = lifted_pair
    assert explore.global_reads(bad, "global_gate")[:2] == ["nr_things", "leader"]
    ex_b, vb, contract = _judge(bad, "global_gate")
    names = ex_b.states
    assert "zeroed, with the global nr_things = 1" in names
    # zero-filled, nr_things == leader: the leak is only in the state that sets one
    leaking = {names[p.variant] for p in ex_b.paths if p.rc == 2**32 - 2}  # -ENOENT
    assert leaking == {"zeroed, with the global nr_things = 1",
                       "zeroed, with the global leader = 1"}
    assert [v.kind for v in vb] == ["leak"]
    assert vb[0].choices[0] == "entry state: zeroed, with the global nr_things = 1"
    _, vp, _ = _judge(good, "global_gate", contract)
    assert vp == [] and balance.change(vb, vp) == "fixed"


def test_live_states_give_pointer_fields_buffers_fresh_ones_keep_them_null(lifted_pair):
    good, bad = lifted_pair
    ex, vb, contract = _judge(bad, "bitmap_user")
    live = {i for i, name in enumerate(ex.states) if name.startswith("live ")}
    assert len(live) == 2
    # fresh states: no bitmap, the early return; live ones reach the buffer and leak
    assert {p.rc for p in ex.paths if p.variant not in live} == {2**32 - 12}
    assert [v.kind for v in vb] == ["leak"] and vb[0].choices[0].startswith(
        "entry state: live ")
    _, vp, _ = _judge(good, "bitmap_user", contract)
    assert vp == [] and balance.change(vb, vp) == "fixed"


def test_undefined_behaviour_on_made_up_values_is_no_violation(lifted_pair):
    """UBSan on the harness's values (a shift by a zeroed count) is reported and run
    past: the path returns and is judged; it is not a violation of its own."""
    good, _ = lifted_pair
    ex, vs, _ = _judge(good, "shifts_by_state")
    assert {p.outcome for p in ex.paths} == {"return"} and vs == []
    assert all("shift exponent" in p.stderr for p in ex.paths)


def test_a_one_sided_change_is_claimed_only_when_the_other_side_was_explored():
    assert balance.claimable("REGRESSION", True, False) == ("REGRESSION", "")
    assert balance.claimable("fixed", False, True) == ("fixed", "")
    ch, why = balance.claimable("REGRESSION", False, True)
    assert ch == "error" and "base's exploration stopped at the budget" in why
    assert balance.claimable("fixed", True, False)[0] == "error"
    assert balance.claimable("fails as on base", False, False) == ("fails as on base", "")


def test_an_overrun_of_a_stubs_object_is_judged(lifted_pair):
    good, _ = lifted_pair
    ex, vs, _ = _judge(good, "overruns_allocation")
    assert "sanitizer" in {p.outcome for p in ex.paths}  # not "entry-object"
    assert {v.kind for v in vs} == {"sanitizer"}


def test_global_states_write_only_writable_data_and_match_across_sides(lifted_pair):
    good, bad = lifted_pair
    reads = explore.global_reads(good, "reads_const_table")
    assert "nr_limits" in reads and "limits_table" not in reads  # .rodata: never written
    # base and patched get one list of states, whichever side reads a global
    both = [v["name"] for v in explore.function_variants([bad, good], "global_gate")]
    assert both == [v["name"] for v in explore.function_variants([good, bad], "global_gate")]
    assert len(both) == len(set(both))


def test_a_lifted_unit_serves_the_next_checkout_of_the_same_content(tmp_path):
    """Checkouts move (a worktree per run): the harness is keyed and named by content,
    not by the checkout's path, and its locations still come out tree-relative."""
    lifted = []
    for name in ("first", "second"):
        root = tmp_path / name
        shutil.copytree(TOY, root)
        argv = ("gcc", "-std=gnu11", "-O2", "-Werror", f"-I{root / 'include'}", "-include",
                "xen/config.h", "-c", "unit.c", "-o", "unit.o")
        lifted.append(lift.lift(root, "unit.c", argv, root, FUNCS, tmp_path / "cache",
                                "toy-content"))
    assert lifted[0].dir == lifted[1].dir  # one cache entry, built once
    ex, _, _ = _judge(lifted[1], "take_two")
    sym = explore.Symbolizer(lifted[1].exe, tmp_path / "second", tmp_path / "second")
    sym.lookup([c.site for p in ex.paths for c in p.calls])
    sites = {sym.at(c.site) for p in ex.paths for c in p.calls}
    assert sites and all(s.startswith("unit.c:") for s in sites), sites
