"""Generic BALANCE on real Xen trees: Debian bookworm's 4.17 (CI) and real upstream fixes
of a lock, reference, mapping or allocation released on one path and not another
(XEN_GIT). Patches for the Debian tree are made at run time from the tree's own text."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from verifier.model import Outcome, TreeSource

UNIT = "xen/common/memory.c"
FUNC = "guest_remove_page"


def _verify(patches: list[str], source: TreeSource, refs: list[str], cache: Path):
    from verifier.patch import load_series
    from verifier.pipeline import verify

    return verify(load_series(patches, source.git_dir), [(source, refs)], cache,
                  command="test")


def _balance(report):
    (run,) = report.runs
    (check,) = [c for c in run.checks if c.id == "BALANCE"]
    return run, check


def _drop_put_gfn_on_first_early_return(lines: list[str]) -> list[str]:
    """guest_remove_page's first `put_gfn(d, gmfn);` that precedes a `return -ENOENT`."""
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"int {FUNC}("))
    for i in range(start, len(lines) - 3):
        if lines[i].strip() == "put_gfn(d, gmfn);" and any(
                "return -ENOENT;" in lines[j] for j in range(i + 1, i + 4)):
            return [*lines[:i], *lines[i + 1:]]
    raise AssertionError("the tree has no put_gfn before an early -ENOENT return")


# --------------------------------------------------------------------------- Debian (CI)


@pytest.mark.debian
def test_bookworm_lifts_memory_c_and_catches_a_dropped_put_gfn(debian_bookworm, test_cache,
                                                               tmp_path):
    from verifier.tree import _git, resolve

    sha, _ = resolve(debian_bookworm, "HEAD")
    old = _git(debian_bookworm.git_dir, "show", f"{sha}:{UNIT}", strip_newline_in_stdout=False)
    lines = old.splitlines(keepends=True)
    diff = "".join(difflib.unified_diff(lines, _drop_put_gfn_on_first_early_return(lines),
                                        f"a/{UNIT}", f"b/{UNIT}"))
    patch = tmp_path / "leak.patch"
    patch.write_text(f"From: Test <test@example.org>\nSubject: [PATCH] leak\n\n---\n{diff}")
    run, check = _balance(_verify([str(patch)], debian_bookworm, [], test_cache))
    (fn,) = [f for f in run.functions if f.name == FUNC]
    assert fn.lifted, fn.reason
    assert fn.paths.base >= 10 and fn.paths.patched >= 10  # explored, not one early exit
    (lim,) = [lim for lim in run.limits if lim.pack == "generic"]  # what BALANCE rests on
    assert any(UNIT in v for v in lim.verbatim) and any(FUNC in v for v in lim.verbatim)
    assert fn.violations.base == ()  # 4.17 has the XSA-277 fix: clean
    assert fn.change == "REGRESSION"
    leaks = [v for v in fn.violations.patched if v.kind == "leak"]
    assert leaks and all(v.resource.startswith("gfn lock") for v in leaks)
    assert all(v.acquired_at.startswith("xen/") and ":" in v.returned_at for v in leaks), leaks
    assert any("p2m_" in c for v in leaks for c in v.choices)  # the p2m type chosen
    assert (check.base, check.patched, check.change) == (Outcome.PASS, Outcome.FAIL,
                                                         "REGRESSION")
    replay = Path(leaks[0].replay.strip("'"))
    assert replay.is_file() and (replay.parent / "Makefile").is_file()


# --------------------------------------------------------------------------- upstream fixes

# Real fixes (2018 and later): what the base leaks, and where.
FIXES = [
    # XSA-277: the gfn lock of get_gfn_query() kept on the p2m_invalid/p2m_mmio_dm returns
    ("d80988cfc0", "guest_remove_page", "leak", "gfn lock", ("p2m_invalid", "p2m_mmio_dm")),
    # vlapic_init(): the regs page kept when __map_domain_page_global() fails
    ("8a62dee9ce", "vlapic_init", "leak", "domheap page", ()),
    # p2m_add_foreign(): put_page() of a NULL page when get_page_from_gfn() fails
    ("62dde2c1ef", "p2m_add_foreign", "release-unheld", "page reference", ()),
    # iommu_alloc(): the iommu struct (xzalloc) kept when ioremap() or a later check fails
    ("376f0c1b69", "iommu_alloc", "leak", "xmalloc", ()),
    # hvm_copy_context_and_params(): the vmalloc()ed context kept when hvm_save() fails
    ("3d6e92e309", "hvm_copy_context_and_params", "leak", "vmalloc", ()),
    # microcode_update_helper(): get_cpu_maps() kept on the "first online CPU is not
    # nmi_cpu" return; the branch rests on globals alone (a global entry state takes it)
    ("b35b22acb8", "microcode_update_helper", "leak", "cpu maps", ("entry state: zeroed, "
                                                                   "with the global",)),
]


@pytest.mark.upstream
@pytest.mark.parametrize("commit, func, kind, resource, choices", FIXES,
                         ids=[f[0] for f in FIXES])
def test_upstream_fix_is_named_fixed(xen_git, test_cache, commit, func, kind, resource,
                                     choices):
    run, check = _balance(_verify([f"git:{commit}"], xen_git, [f"{commit}^"], test_cache))
    (fn,) = [f for f in run.functions if f.name == func]
    assert fn.lifted, fn.reason
    assert fn.change == "fixed"
    ident = {(v.kind, v.resource, v.rc.split(" ")[-1]) for v in fn.violations.base}
    # nothing new on patched (what remains is the same on both: the model's limits)
    assert all((v.kind, v.resource, v.rc.split(" ")[-1]) in ident for v in fn.violations.patched)
    hits = [v for v in fn.violations.base if v.kind == kind and v.resource.startswith(resource)]
    assert hits, fn.violations.base
    assert not [v for v in fn.violations.patched
                if v.kind == kind and v.resource.startswith(resource)]
    for want in choices:
        assert any(want in c.split("= ")[-1] or c.startswith(want)
                   for v in hits for c in v.choices), want
    assert check.base is Outcome.FAIL and f"{func}: fixed" in check.detail
    if not fn.violations.patched:
        assert (check.patched, check.change) == (Outcome.PASS, "fixed")
