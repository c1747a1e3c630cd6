"""Backport triage against real Xen history (``XEN_GIT``): a ground truth built from
what the stable branches actually did, independently of the code under test.

For each backport below, found with ``git log master..stable-4.x`` and its ``master
commit:`` / ``(cherry picked from commit ...)`` line, the master fix is checked

- on the backport's parent: ``applies`` (clean/offsets) when ``git apply --check`` of
  the master diff succeeds there, ``three-way`` when only ``git apply --3way`` does
  (run on a throwaway index and object directory), ``conflict`` when neither does,
  and ``missing-prerequisite`` when an identifier the master fix adds a use of is in
  the master parent's tree but not in the branch's
  (``git grep -w``), with the master commit ``git log -S`` names as introducing it;
- on the backport itself: ``already-applied``, naming the backport;
- on the branch tip: ``already-applied`` naming the backport, unless the branch later
  reverted it (then: not applied, naming the revert).

Then fixes checked just before the branch backported their prerequisite, reverts,
and a squashed backport. Verdicts come from the table, never from the code.
"""

from __future__ import annotations

import pytest

from verifier.apply import apply_series
from verifier.model import ApplyStatus
from verifier.patch import load_series
from verifier.tree import checkout

pytestmark = pytest.mark.upstream

APPLIES = {"clean", "offsets"}
NOT_APPLIED = {"clean", "offsets", "three-way", "conflict", "missing-prerequisite"}

# (master fix, branch, backport, expected on the backport's parent, introducing commit
#  when that is missing-prerequisite). 20 with the master diff unchanged, 24 adjusted.
BACKPORTS = [
    ("c7908869ac26", "stable-4.17", "47eb94123035", "applies", None),  # pci: fix pci_get_pdev()
    ("fc2e1f3aad60", "stable-4.17", "7f55774489d2", "applies", None),  # x86/ucode: error paths
    ("a478b38c01b6", "stable-4.17", "e08e7330c58b", "applies", None),  # iommu/vtd: rename local
    ("5776a2e9db01", "stable-4.17", "600db442cbb8", "applies", None),  # x86/viridian: NULL deref
    ("2896224a4e29", "stable-4.17", "6f2d89d68175", "applies", None),  # x86/shadow: shadows
    ("78a86b26868c", "stable-4.18", "40bfa9dd57f1", "applies", None),  # x86/spec-ctrl: SRSO URL
    ("777c71d31325", "stable-4.18", "d31385be5c8e", "applies", None),  # x86/EPT: non-present
    ("ad3ff7b4279d", "stable-4.18", "f29c2fb064ef", "applies", None),  # x86/x2APIC: clusters
    ("ef101f525173", "stable-4.18", "f6e5ab5fa725", "applies", None),  # xen/cmdline: printf format
    ("190b7f49af64", "stable-4.18", "a4f3f5a62c10", "applies", None),  # xen/arm: page: overflow
    ("ddec00769cd8", "stable-4.19", "bcdb61a2462e", "applies", None),  # x86/emul: RDSEED
    ("2defb544900a", "stable-4.19", "eec09073ad1d", "applies", None),  # iommu/amd-vi: IVMD
    ("14fd9b5642cd", "stable-4.19", "d74241aae512", "applies", None),  # x86/emul: %cr8 accesses
    ("d779e3f98c2a", "stable-4.19", "a24e1cda35de", "applies", None),  # x86/vmx: VMEntry failure
    ("29555668b572", "stable-4.19", "8ebd6b066d17", "applies", None),  # x86/dpci: pending IRQs
    ("be7f0cc651d8", "stable-4.20", "64f9c54daa5b", "applies", None),  # ARM/vgic: out-of-bounds
    ("37b49cb48ed9", "stable-4.20", "246cedb52fc7", "applies", None),  # sched/rtds: cur_budget
    ("03878fba4af1", "stable-4.20", "6cf9b61548a1", "applies", None),  # x86/pv32: bogus CR2
    ("aed6278b2a7f", "stable-4.20", "bfd9be74c242", "applies", None),  # AMD/IOMMU: unshare IRQ
    ("71c6a6231766", "stable-4.20", "16b3bd3d571f", "applies", None),  # page_alloc: buddy alignment
    ("cb319824bfa8", "stable-4.17", "16f2e47eb120", "conflict", None),   # x86emul: EVEX.R'
    ("04e31583bab9", "stable-4.17", "fdeacd43848e", "applies", None),  # VT-d: ATS checking
    ("672894a11fe0", "stable-4.18", "58580992d381", "conflict", None),   # x86/HVM: r/w split
    ("24d76e388bd7", "stable-4.19", "10991bc06275", "conflict", None),   # mwait-idle: GNR-D
    ("989556c6f8ca", "stable-4.17", "2392e958ec6f", "conflict", None),   # virtual-region: rename
    ("9e18f339830c", "stable-4.17", "846fb984b506", "conflict", None),   # x86/boot: watchdog
    ("5793b84c5e8f", "stable-4.17", "c5915a56fb49", "conflict", None),   # xsm: domaininfo
    ("f7065b24f4fb", "stable-4.17", "8da1697e2c18", "three-way", None),  # amd: C6, Zen2
    ("fe3412ab83cc", "stable-4.18", "87d2cdd51327", "missing-prerequisite", "0441c3acc7"),
    ("a6626b613a84", "stable-4.18", "f196c2f4dcf5", "conflict", None),   # x86/shadow: trace_emul
    ("6cf0aaeb8df9", "stable-4.18", "2b18f341cb5c", "missing-prerequisite", "038826b61e"),
    ("9e18f339830c", "stable-4.18", "a790c670bbe5", "conflict", None),   # x86/boot: watchdog
    ("26fe09e34566", "stable-4.19", "46e3e9d73983", "conflict", None),   # radix-tree: RADIX_TREE()
    ("81f8b1dd9407", "stable-4.19", "330ecfc7c1be", "three-way", None),  # console: panic() messages
    ("560c51be8f6a", "stable-4.19", "e2adda16e010", "missing-prerequisite", "56a8f0bf8d"),
    ("75d29d9b5e22", "stable-4.19", "999fdfb104cf", "conflict", None),   # mm: claimed pages
    ("53859596c0d3", "stable-4.20", "f9aea52a9747", "conflict", None),   # vpci/msix: bogus MSI-X
    ("acfd2631b95e", "stable-4.20", "869ef9bbf5eb", "conflict", None),   # x86/boot: SSP interrupts
    ("986707b461eb", "stable-4.20", "57db4b630312", "conflict", None),  # xen/cpu: cpu_khz
    ("4ff927133ebc", "stable-4.20", "4563f9c1476b", "three-way", None),  # EFI: cfg file buffer
    ("4e9d9e7cc9a6", "stable-4.21", "3960613c1e3b", "three-way", None),  # x86/vpmu: event selectors
    ("6ba5e9c7b887", "stable-4.21", "93a06cd8cbc9", "missing-prerequisite", "6d1180b149"),
    ("7c24d58a6e64", "stable-4.21", "999c6fadf714", "conflict", None),  # vpci/msix: BARs enabled
    ("87279cafc0b6", "stable-4.21", "b416033fdb52", "conflict", None),   # x86/mcfg: memory map
]

# The branch reverted the backport later: (fix, backport, branch tip, revert).
REVERTED = {
    "52f3b7c6f89a": "360813e9e8",  # 4.19: deferred scrub reverted with its prerequisite
    "b304f9484272": "a9730e4953",  # 4.20: the same
    "9cef77400470": "3c7c9225ff",  # 4.17: xsm get_dom0_console, "not applicable to this branch"
}
REVERT_CASES = [
    # (fix, branch, backport)
    ("83a784a15b47", "stable-4.19", "52f3b7c6f89a"),
    ("83a784a15b47", "stable-4.20", "b304f9484272"),
    # Its master commit is not in the public history: the branch commit is the patch.
    ("9cef77400470", "stable-4.17", "9cef77400470"),
]

# Fixes checked on the commit just before the branch backported their prerequisite:
# (fix, ref, the master commit that introduced what it needs).
PREREQUISITES = [
    ("b5926c6ecf05", "19ee1e1faa^", "de1d265001"),  # XSA-439 is_zen1_uarch, 4.17
    ("b5926c6ecf05", "b007f82a70^", "de1d265001"),  # the same on 4.15
    ("a1fb15f61692", "9d2f136328^", "7ef0084418"),  # XSA-453 block_lock_speculation, 4.17
    ("42a572a38e22", "1932973ac9^", "7ef0084418"),  # XSA-453 open-coded locks, 4.18
    ("f218daf6d3a3", "9104de10b2^", "7ef0084418"),  # XSA-453 percpu-rwlock, 4.16
    ("630e8875ab36", "b6eb7932a1^", "372af52441"),  # AMD ucode SHA2 checks need sha2_256, 4.17
]


def _runs() -> list[tuple[str, str, str, str | None]]:
    """(fix, ref, expected, commit): the commit the result must name, if any."""
    out: list[tuple[str, str, str, str | None]] = []
    for fix, branch, backport, on_parent, intro in BACKPORTS + [
            (f, b, bp, "not-applied", None) for f, b, bp in REVERT_CASES]:
        out.append((fix, f"{backport}^", on_parent, intro))
        out.append((fix, backport, "already-applied", backport))
        if backport in REVERTED:
            out.append((fix, branch, "reverted", REVERTED[backport]))
        else:
            out.append((fix, branch, "already-applied", backport))
    out += [(fix, ref, "missing-prerequisite", intro) for fix, ref, intro in PREREQUISITES]
    # A master revert backported: the ancient fix itself is on the branch, then reverted.
    out.append(("ffbbfda37782", "8be85d8c0d^", "already-applied", "ffbbfda37782"))
    out.append(("ffbbfda37782", "stable-4.17", "reverted", "8be85d8c0d"))
    # A tools commit on the branch, reverted there ("Reverting commit <sha>").
    out.append(("e8e6e42279a5", "stable-4.17", "reverted", "2f8851c37f"))
    # A squashed backport: two "(cherry picked from commit ...)" lines; the second counts.
    out.append(("15fe2eb5f1ba", "d6654c63e76f", "already-applied", "d6654c63e76f"))
    out.append(("630e8875ab36", "d6654c63e76f", "already-applied", "d6654c63e76f"))
    # The CI fix was squashed into both: its lib part is in d6654c63e76f's parent already.
    out.append(("15fe2eb5f1ba", "d6654c63e76f^", "already-applied", "b6eb7932a1c6"))
    return out


RUNS = _runs()


@pytest.fixture(scope="module")
def series_of(xen_git):
    cache: dict[str, object] = {}

    def get(fix: str):
        if fix not in cache:
            cache[fix] = load_series([f"git:{fix}"], xen_git.git_dir)
        return cache[fix]
    return get


@pytest.mark.parametrize("fix, ref, expected, commit", RUNS,
                         ids=[f"{f[:10]}@{r}:{e}" for f, r, e, _ in RUNS])
def test_triage_agrees_with_history(xen_git, test_cache, series_of, fix, ref, expected, commit):
    with checkout(xen_git, ref, test_cache) as co:
        r = apply_series(series_of(fix), co)
    status = str(r.status)
    if expected == "already-applied":
        assert r.status is ApplyStatus.ALREADY_APPLIED, r.detail
        assert r.matches and (r.matches[0].commit or "").startswith(commit), r.detail
    elif expected == "missing-prerequisite":
        assert r.status is ApplyStatus.MISSING_PREREQUISITE, r.detail
        intros = {p.introduced_by or "" for p in r.prerequisites}
        assert any(i.startswith(commit) for i in intros), r.detail
        assert all(p.used_at for p in r.prerequisites)
    elif expected == "reverted":
        assert status in NOT_APPLIED, r.detail
        assert any((m.reverted_by or "").startswith(commit) for m in r.reverted), r.detail
    elif expected == "applies":
        assert status in APPLIES, r.detail
    elif expected == "not-applied":
        assert status in NOT_APPLIED, r.detail
    else:
        assert status == expected, r.detail
