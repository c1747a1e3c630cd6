"""Buggy variants of the fix, made from a real tree's fixup at run time, each caught by the
right check with a trace a reviewer can read in report.md.

The variants are line-preserving edits of the extracted fixup statement
(verifier.harness.FIXUP_MUTATIONS): no Xen text is stored here. They run on Debian's
4.17 tree (CI) and, by hand, on any tree with the fix (XEN_TREE_417=...).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from verifier.model import (
    ApplyResult,
    ApplyStatus,
    Outcome,
    PatchMeta,
    PatchSeries,
    Report,
    RunResult,
    run_verdict,
)
from verifier.model import Patch as ModelPatch
from verifier.packs.m2p_strict.checks import _combine, check_target
from verifier.report import render_markdown
from verifier.target import HarnessError, make_target

# mutation -> the property that must catch it, and words its failure must say
EXPECTED = {
    "leak-alloc-lock": ("P3", "page_alloc_lock"),
    "no-preempt": ("P3", "ERESTART"),
    "drop-page": ("P3", "page_list"),
    "own-domain": ("P8", "walked"),
    "pv32-walk": ("P8", "walked"),
    # the L4 validator (verifier.harness.VALIDATOR_MUTATIONS): P6's contract
    "count-partial": ("P6", "nr_l4_pages is"),
    "positive-success": ("P6", "returned 1, the contract says 0"),
}
# the scenario that must be among the failing ones, where the property has several legs
FAILING_SCENARIO = {"pv32-walk": "a 32-bit PV domain", "own-domain": "a domain setting its own "
                    "vCPU 0 context"}


@pytest.fixture(scope="module")
def unmutated(xen_tree_417: Path, test_cache: Path):
    target = make_target(xen_tree_417, revision="as is", cache=test_cache)
    try:
        yield check_target(target, xen_tree_417)
    finally:
        target.close()


@pytest.mark.debian
def test_the_tree_as_is_passes_what_the_mutants_fail(unmutated):
    for prop, _ in EXPECTED.values():
        # P3 and P6 hold but for their accepted deviations (livelock, partial release)
        want = Outcome.ACCEPTED if prop in ("P3", "P6") else Outcome.PASS
        assert unmutated[prop].outcome is want, unmutated[prop].detail


@pytest.mark.debian
@pytest.mark.parametrize("mutation", sorted(EXPECTED))
def test_buggy_variant_caught_by_the_right_check(mutation, xen_tree_417, test_cache):
    prop, words = EXPECTED[mutation]
    target = make_target(xen_tree_417, revision=f"4.17 + {mutation}", cache=test_cache,
                         mutate=mutation)
    try:
        runs = check_target(target, xen_tree_417)
    finally:
        target.close()
    caught = runs[prop]
    assert caught.outcome is Outcome.FAIL, f"{mutation}: {prop} {caught.detail}"
    assert caught.evidence is not None and caught.evidence.trace, caught.detail
    assert words in (caught.detail + caught.evidence.state + caught.evidence.output), caught
    if mutation in FAILING_SCENARIO:
        assert any(r.failed and r.name == FAILING_SCENARIO[mutation] for r in caught.results), \
            [(r.name, r.status) for r in caught.results]
    assert caught.evidence.replay and caught.evidence.replay[0].startswith("reset ")
    # Every restore scenario checks lock balance and the page list on each return, so a
    # leak may show under P1 too; what reads the tree only is not disturbed.
    assert runs["P9"].outcome is Outcome.PASS, runs["P9"].detail

    checks = tuple(_combine(runs, None, "-", f"4.17 + {mutation}"))
    apply = ApplyResult(ApplyStatus.ALREADY_APPLIED, "the tree as it is, mutated")
    meta = PatchMeta(subject=f"mutant {mutation}", source="test", kind="diff")
    run = RunResult(ref="4.17", commit="0" * 40, subject="Debian 4.17", tree="debian",
                    apply=apply, checks=checks, verdict=run_verdict(apply, checks))
    md = render_markdown(Report(PatchSeries((ModelPatch(meta, "", ()),)), (run,), "test"))
    assert run.verdict.value == "fail"
    section = md[md.index(prop + " on 4.17"):]
    # the numbered trace is in the report, every operation of it
    assert all(f". {op}" in section for op in caught.evidence.trace), section


@pytest.mark.debian
def test_a_mutation_that_does_not_match_is_refused(xen_tree_417):
    """A fixup without the mutated line is refused, never run as if mutated."""
    import dataclasses

    from verifier.extract import find_roles
    from verifier.harness import _mutated

    fixup = find_roles(xen_tree_417)["restore_fixup"]
    assert "MUTATION drop-page" in _mutated(fixup, "drop-page").text
    without = dataclasses.replace(fixup, text="\n".join(
        ln for ln in fixup.text.splitlines() if "page_list_add_tail" not in ln))
    with pytest.raises(HarnessError, match="does not match"):
        _mutated(without, "drop-page")
    with pytest.raises(HarnessError, match="no restore walk"):
        _mutated(dataclasses.replace(fixup, text="if ( v->vcpu_id == 0 )\n    x = 1;\n"),
                 "drop-page")
