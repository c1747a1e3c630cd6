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


# More backports whose diff is the master diff (same patch-id): on the backport's parent
# the master fix applies as the branch applied it, so it needs nothing the branch lacks.
# A sweep for false prerequisites: (master fix, branch, backport).
SAME_DIFF = [
    ("ef101f525173", "stable-4.17", "229e8a72ee4c"),  # xen/cmdline: fix printf format spe
    ("292f68fb7719", "stable-4.17", "c35a2dcd3892"),  # x86/spec-ctrl: Rework ibpb_calcula
    ("b5926c6ecf05", "stable-4.17", "9ac2f49f5fa3"),  # x86/spec-ctrl: Mitigate the Zen1 D
    ("b35b22acb887", "stable-4.17", "6ecb20151e7f"),  # x86/microcode: Add missing unlock
    ("813da5f0e73b", "stable-4.17", "d0cdd34dd815"),  # x86/ioapic: sanitize IO-APIC pins
    ("e2d8a6522516", "stable-4.17", "70ad9c5fdeac"),  # x86/cpu-policy: Fix visibility of
    ("d104a07524ff", "stable-4.17", "a14a7b92af45"),  # xen/sched: set all sched_resource
    ("b1f11273d5a7", "stable-4.17", "f6a3e93b3788"),  # x86/vmx: Don"t spuriously crash th
    ("303d3ff85c90", "stable-4.17", "d663711c0588"),  # bunzip2: fix rare decompression fa
    ("fbcec32d6d3e", "stable-4.17", "32c3403e4c1c"),  # x86/mem_sharing: Release domain if
    ("d51b2f5ea191", "stable-4.17", "6c4e415656d6"),  # x86/altcall: fix clang code-gen wh
    ("c03515190268", "stable-4.17", "6384cdf0c340"),  # x86: Clarify that only 5 hypercall
    ("f77ef3443542", "stable-4.18", "8fc76b187c85"),  # x86/idle: Remove MFENCEs for CLFLU
    ("bbaea9878bf6", "stable-4.18", "562af755b1e0"),  # x86/pv: fix MMUEXT_FLUSH_CACHE to
    ("d3709d1324aa", "stable-4.18", "35489e3aaa05"),  # x86emul: VCVT{,U}DQ2PD ignores emb
    ("87f37449d586", "stable-4.18", "fcb1016bbd47"),  # x86/i8259: do not assume interrupt
    ("1212af3e8c4d", "stable-4.18", "b06cf0701adf"),  # x86/PV: avoid indirect call for I/
    ("131892e0dcc1", "stable-4.18", "5c4aacab1784"),  # x86/boot: Support the watchdog on
    ("a30d438ce58b", "stable-4.18", "4c894c519db6"),  # x86emul: correct #UD check for AVX
    ("23792cc0f22c", "stable-4.18", "48eb9e91990b"),  # xen/sched: fix sched_move_domain()
    ("5776a2e9db01", "stable-4.18", "aba830fc0d20"),  # x86/viridian: avoid NULL pointer d
    ("6e5fed7cb67c", "stable-4.18", "190ef8c03b4a"),  # x86/mkelf32: account for offset wh
    ("7aba44bdd78a", "stable-4.18", "efc71abfe609"),  # x86/HVM: drop stdvga"s "sr[]" stru
    ("4d8acc9c1cf1", "stable-4.18", "77d95386a783"),  # xen/events: fix race with set_glob
    ("161e8f61b5b0", "stable-4.19", "a9c8547cc8d8"),  # xen/arm: Mitigate TLBI errata on v
    ("7db4509d8024", "stable-4.19", "fad76f0d20e0"),  # flask: fix gcov build with gcc14+
    ("6fa6b7feaafd", "stable-4.19", "a0d6b75b832d"),  # x86emul: set (fake) operand size f
    ("b740a9369e81", "stable-4.19", "92667bef147c"),  # x86/HVM: drop stdvga"s "stdvga" st
    ("433ed7d4f8ed", "stable-4.19", "0dc80063166d"),  # x86/mwait-idle: Add Meteorlake sup
    ("5ebd4dd14118", "stable-4.19", "0e0bcd9a02ec"),  # x86/S3: restore MCE (APs) init
    ("645b8d48c78f", "stable-4.19", "4df28706ad87"),  # x86emul: correct put_fpu()"s segme
    ("718400a54dcf", "stable-4.19", "251a9496485a"),  # xen/x86: prevent addition of .note
    ("c0db07031a41", "stable-4.19", "556ca37970cd"),  # x86/thunk: (Mis)align the RETs in
    ("633ee8b2df96", "stable-4.19", "8321aa3db828"),  # x86/pv: Rename pv.iobmp_limit to i
    ("532988dccc19", "stable-4.19", "01b8bc41e8fd"),  # x86/mcheck: fix mca_allbanks updat
    ("18053054b758", "stable-4.19", "41d38d270e18"),  # x86/HVM: reduce recursion in linea
    ("14fd9b5642cd", "stable-4.20", "f14c523da1ee"),  # x86/emul: Emulate %cr8 accesses
    ("cc64c245023c", "stable-4.20", "d8d23d168823"),  # x86/viridian: Enforce bounds check
    ("a934a600c454", "stable-4.20", "45d18b05c09b"),  # x86/pv: Don"t assume that INT $imm
    ("96dfeb41774a", "stable-4.20", "35e4a6ae4d54"),  # gnttab: cope with version changes
    ("8ef32772b548", "stable-4.20", "0761895527fe"),  # x86/HPET: use single, global, low-
    ("c7b742985499", "stable-4.20", "8a44c61b2d4b"),  # x86/boot: don"t blindly mark VGA i
    ("c0e548d9206b", "stable-4.20", "2abb8d0fbf93"),  # xen/gnttab: Fix TOCTOU race in gnt
    ("fc302866f42f", "stable-4.20", "da36efa8521a"),  # x86/xlat: fix UB pointer arithmeti
    ("2f36bef3d847", "stable-4.20", "fd64f59cc74e"),  # cpufreq: Avoid potential buffer ov
    ("f2927d8343ae", "stable-4.20", "4072b0b24c82"),  # xen/arinc653: fix delay in the sta
    ("0315d1032151", "stable-4.20", "d84ac74f8bc5"),  # xen/arm: Add C1-Premium definition
    ("2379ca04feab", "stable-4.20", "95c476191fbb"),  # xen/domain: Disallow XENMEM_claim_
    ("e4424b9a6356", "stable-4.21", "f593155e7c73"),  # xen: arm: fix len type for guest c
    ("74f984159f00", "stable-4.21", "39c90c8deebf"),  # PCI: handle PCI->PCIe bridges as w
    ("b068cafc737d", "stable-4.21", "e39831f5906f"),  # xen/mm: reject XENMEM_claim_pages
    ("2a0ee29f5e64", "stable-4.21", "d174a86aaf3f"),  # arinc653: overwrite entire .dom_ha
    ("be18ad502e5d", "stable-4.21", "60fc5ccb810d"),  # libfdt: fix UBSAN null pointer in
    ("4a93d1fb4f7f", "stable-4.21", "fcccf99e5e35"),  # domctl: handle XEN_DOMCTL_set_targ
    ("ccde3773c176", "stable-4.21", "f53ec9edb64c"),  # xen/arm: fix sparse cpu_possible_m
    ("cd0413bfacf2", "stable-4.21", "032d39ff0e9d"),  # x86/cpu: identify uninitialized CP
    ("5cd1ac15756e", "stable-4.21", "81e71ef34f15"),  # x86/amd: Stop updating the Zenblee
    ("8a9255405ca6", "stable-4.21", "d2a641355022"),  # x86/domain: adjust limitation on s
    ("ed39935f50b9", "stable-4.21", "7aa8647037d1"),  # ppc/irq: introduce a dummy irq_to_
    ("2c9829a2611e", "stable-4.21", "5597c9c56462"),  # x86/kexec: Check for a good per-cp
    ("751e371c913c", "stable-4.22", "0a58e3a70e7d"),  # sysctl/XSM: drop .scheduler_op() h
    ("4ef45cbe3142", "stable-4.22", "7285f1d94088"),  # platform-op/XSM: move resource-{,u
    ("0e9d647aca8a", "stable-4.22", "ca00e870e357"),  # xen/evtchn: fix race between FIFO
    ("0501e1dc0477", "stable-4.22", "525221a02ca4"),  # sysctl/XSM: drop .resource_{,un}pl
    ("52350da92619", "stable-4.22", "f755242d6083"),  # x86/vrtc: fix race in CMOS index c
    ("4b249cba4b25", "stable-4.22", "ac31d94a08fa"),  # sysctl/XSM: drop .readconsole() ho
    ("96dfeb41774a", "stable-4.22", "f8fa2b21f84c"),  # gnttab: cope with version changes
    ("f795a9c491a7", "stable-4.22", "c8e99384ac8e"),  # xen/arm: Reject pseudo-domain fore
    ("f2cac32029e6", "stable-4.22", "bd630bbdd4ff"),  # x86: SHADOW_PAGING is deprecated
    ("2afa6fea9d9e", "stable-4.22", "14a99bce7464"),  # vNUMA: close race window in domain
    ("3179bf29311f", "stable-4.22", "69a59f438901"),  # sysctl/Flask: add preliminary chec
    ("61b0a59ce26d", "stable-4.22", "52239dd76f77"),  # gnttab: check values against activ
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
    out += [(fix, f"{backport}^", "applies", None) for fix, _, backport in SAME_DIFF]
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
