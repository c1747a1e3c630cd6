"""What the m2p-strict pack needs and recognises, as data.

Roles are what the harness extracts from a tree (names and files differ per Xen
version: see ``domain.md``, "Where the code lives"); ``FUNCTIONS`` are the names by
which a patch or a tree is recognised as this pack's concern; ``CHECKS`` are the
properties P1-P9 with the titles a report shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    functions: tuple[str, ...]  # candidate definitions, newest name last
    files: tuple[str, ...]  # where to look, relative to the tree root
    part: str = "function"  # "function" | "statement" (a block inside the function)
    required: bool = True  # False: the role may be absent in a version (pre-fix trees)
    note: str = ""


@dataclass(frozen=True)
class CheckSpec:
    id: str
    title: str
    finding_only: bool = False  # P4/P7 inform and never fail a run by themselves
    needs_target: bool = True  # P9 reads the tree only


NAME = "m2p-strict"
TITLE = "x86/PV m2p-strict mode and L4 page tables restored before vCPU 0's context"

ROLES: tuple[Role, ...] = (
    Role(
        "restore fixup block",
        ("arch_set_info_guest",),
        ("xen/arch/x86/domain.c",),
        part="statement",
        note="the `if ( v->vcpu_id == 0 )` statement that loads d->vm_assist (and, where "
        "the fix is present, walks d->page_list); anchor it by content, it occurs twice",
    ),
    Role(
        "RO_MPT slot filler",
        ("fill_ro_mpt",),
        ("xen/arch/x86/mm.c",),
        required=False,
        note="void before the fix, bool_t/bool after; absent before m2p_strict (4.5)",
    ),
    Role("L4 validator", ("alloc_l4_table", "promote_l4_table"), ("xen/arch/x86/mm.c",)),
    Role("L4 devalidator", ("free_l4_table", "demote_l4_table"), ("xen/arch/x86/mm.c",)),
    Role(
        "L4 slot initialiser",
        ("init_guest_l4_table", "init_xen_l4_slots"),
        ("xen/arch/x86/mm.c",),
    ),
    Role("page lock", ("page_lock", "page_unlock", "page_lock_unsafe"), ("xen/arch/x86/mm.c",)),
)

# A patch or tree concerns this pack when it touches one of these.
FUNCTIONS: tuple[str, ...] = (
    "arch_set_info_guest",
    "fill_ro_mpt",
    "zap_ro_mpt",
    "alloc_l4_table",
    "free_l4_table",
    "promote_l4_table",
    "demote_l4_table",
    "init_guest_l4_table",
    "init_xen_l4_slots",
    "nr_l4_pages",
)
KEYWORDS: tuple[str, ...] = ("m2p_strict", "RO_MPT_VIRT_START", "nr_l4_pages")

CHECKS: tuple[CheckSpec, ...] = (
    CheckSpec("P1", "Legacy restore order: every L4 gets the RO_MPT slot"),
    CheckSpec("P2", "Migration-v2 order: same end state"),
    CheckSpec("P3", "Preemption, termination, lock balance, page-list integrity"),
    CheckSpec("P4", "Cost: pages walked per restore and continuation", finding_only=True),
    CheckSpec("P5", "Repeated vCPU 0 set-context"),
    CheckSpec("P6", "Validator contract and nr_l4_pages accounting"),
    CheckSpec("P7", "Walk termination assumption (pre-filled L4)", finding_only=True),
    CheckSpec("P8", "Scope: own context, 32-bit PV and HVM untouched"),
    CheckSpec("P9", "Callers of fill_ro_mpt after its contract change", needs_target=False),
)

__all__ = ["CHECKS", "FUNCTIONS", "KEYWORDS", "NAME", "ROLES", "TITLE", "CheckSpec", "Role"]
