"""Reference model of the state the m2p-strict fix touches: the specification.

The model implements the Target protocol (the operations brief) in plain Python and
says what a correct tree does, not what any one revision does:

- an L4 validated while ``m2p_strict`` is set gets its RO_MPT slot filled with
  ``idle_pg_table``'s entry; validated while clear, the slot stays empty;
- ``set_info_guest`` on vCPU 0 of *another* 64-bit PV domain switching ``m2p_strict``
  on leaves every validated, lockable L4 with the slot equal to ``idle_slot``; the walk
  rotates ``d->page_list`` (head to tail), skips pages whose ``page_lock`` fails and,
  with preemption pending, returns ``-ERESTART`` after at most one batch of pages; the
  re-invoked call continues where it stopped and ``d->vm_assist`` changes only when
  the walk is complete;
- ``nr_l4_pages`` counts L4s from full validation to full devalidation: a preempted
  (partial) validation is not counted, a preempted devalidation still is;
- the validator and devalidator follow the tree's contract: ``0``, ``-ERESTART`` with
  the progress kept (``-EINTR`` after progress becomes ``-ERESTART``), ``-EINTR`` with
  nothing done (type dropped on validation, kept on devalidation), or an error (type
  dropped).

Injected failures (``inject``) fire once, at the named entry, then are consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

M2P_STRICT_BIT = 32  # VMASST_TYPE_m2p_strict (public/xen.h)
ERESTART = 85
EINTR = 4
RO_MPT_SLOT = 256  # l4_table_offset(RO_MPT_VIRT_START)
BATCH = 256  # pages walked between preemption checks
L4_ENTRIES = 512
FIRST_XEN_SLOT, LAST_XEN_SLOT = 256, 271
IDLE_SLOT = 0x0000_0000_1BAD_0125  # the model's idle_pg_table RO_MPT entry (recognisable)

CONSTANTS: dict[str, Any] = {
    "m2p_strict_bit": M2P_STRICT_BIT,
    "ERESTART": ERESTART,
    "EINTR": EINTR,
    "ro_mpt_slot": RO_MPT_SLOT,
    "batch": BATCH,
    "l4_entries": L4_ENTRIES,
}

PREEMPT_MODES = ("never", "always", "every", "at")


def m2p_mask(constants: dict[str, Any] | None = None) -> int:
    """The ``vm_assist`` bit of m2p_strict for a target's constants."""
    return 1 << int((constants or CONSTANTS).get("m2p_strict_bit", M2P_STRICT_BIT))


def is_guest_l4_slot(i: int) -> bool:
    return not FIRST_XEN_SLOT <= i <= LAST_XEN_SLOT


class ModelError(Exception):
    """An operation the specification does not define (a scenario bug, not a finding)."""


@dataclass
class Page:
    mfn: int
    type: str = "none"  # "none" | "l4"
    validated: bool = False
    partial: bool = False
    direction: str | None = None  # "promote" | "demote" while partial
    count: int = 0
    locked: bool = False
    slot: int = 0
    nr_validated: int = 0

    def lockable(self) -> bool:
        return self.validated and self.count > 0 and not self.locked

    def as_state(self) -> dict[str, Any]:
        return {
            "mfn": self.mfn,
            "type": self.type,
            "validated": self.validated,
            "partial": self.partial,
            "count": self.count,
            "locked": self.locked,
            "slot": self.slot,
        }


@dataclass
class _Walk:
    remaining: int  # pages still to visit in the current restore walk
    vm_assist: int  # the value to install once complete


@dataclass
class M2PModel:
    """The specification as a Target. ``revision`` is "model"."""

    revision: str = "model"
    constants: dict[str, Any] = field(default_factory=lambda: dict(CONSTANTS))

    def __post_init__(self) -> None:
        self.reset(0)

    # ------------------------------------------------------------------ setup
    def reset(
        self, nr_pages: int, *, pv: bool = True, pv32: bool = False, vm_assist: int = 0
    ) -> None:
        if nr_pages < 0:
            raise ModelError(f"reset: negative page count {nr_pages}")
        self.pages: dict[int, Page] = {m: Page(m) for m in range(nr_pages)}
        self.page_list: list[int] = list(range(nr_pages))
        self.pv, self.pv32 = pv, pv32
        self.vm_assist = vm_assist
        self.nr_l4_pages = 0
        self.preempt_mode, self.preempt_n, self._preempt_calls = "never", 0, 0
        self.injections: dict[str, tuple[int, int]] = {}
        self.counters = {"list_removed": 0, "preempt_checks": 0, "fill_calls": 0}
        self._walk: _Walk | None = None

    def set_preempt(self, mode: str, n: int = 0) -> None:
        if mode not in PREEMPT_MODES:
            raise ModelError(f"unknown preemption mode {mode!r}")
        self.preempt_mode, self.preempt_n, self._preempt_calls = mode, n, 0

    def inject(self, fn: str, *, entry: int, rc: int) -> None:
        self.injections[fn] = (entry, rc)

    def hold_page_lock(self, mfn: int, held: bool = True) -> None:
        self._page(mfn).locked = held

    def set_slot(self, mfn: int, value: int) -> None:
        self._page(mfn).slot = value

    # ------------------------------------------------------------------ helpers
    def _page(self, mfn: int) -> Page:
        try:
            return self.pages[mfn]
        except KeyError:
            raise ModelError(f"no page mfn {mfn} in a domain of {len(self.pages)}") from None

    @property
    def m2p_strict(self) -> bool:
        return bool(self.vm_assist & m2p_mask(self.constants))

    def _preempt_check(self) -> bool:
        self.counters["preempt_checks"] += 1
        self._preempt_calls += 1
        k, mode = self._preempt_calls, self.preempt_mode
        if mode == "always":
            return True
        if mode == "every":
            return self.preempt_n > 0 and k % self.preempt_n == 0
        if mode == "at":
            return k == self.preempt_n
        return False

    def _take(self, fn: str, entry: int) -> int | None:
        inj = self.injections.get(fn)
        if inj and inj[0] == entry:
            del self.injections[fn]
            return inj[1]
        return None

    # ------------------------------------------------------------------ validation
    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        p = self._page(mfn)
        if p.validated:
            p.count += 1
            return 0
        if p.partial and p.direction == "demote":
            raise ModelError(f"pin_l4({mfn}) while its devalidation is in progress")
        start = p.nr_validated if p.partial else 0
        p.type, p.count = "l4", 1
        for i in range(start, L4_ENTRIES):
            if not is_guest_l4_slot(i):
                continue
            rc = self._take("get_page_from_l4e", i)
            if rc is None or rc >= 0:
                continue
            if rc == -ERESTART or (rc == -EINTR and i):
                p.partial, p.direction, p.nr_validated = True, "promote", i
                return -ERESTART
            self._drop(p)  # -EINTR with nothing done, or an error
            return rc
        p.partial, p.direction, p.validated = False, None, True
        p.nr_validated = L4_ENTRIES
        fill = self.m2p_strict and self.pv and not self.pv32
        p.slot = self._idle() if fill else 0
        self.nr_l4_pages += 1
        return 0

    def unpin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        p = self._page(mfn)
        if p.type != "l4" or not (p.validated or p.partial):
            raise ModelError(f"unpin_l4({mfn}) on a page that is not an L4")
        if p.validated and p.count > 1:
            p.count -= 1
            return 0
        counted = p.validated or p.direction == "demote"
        if p.validated:
            top = L4_ENTRIES - 1
        else:  # resume a devalidation at the entry it stopped on; release a partial one
            top = p.nr_validated - (0 if p.direction == "demote" else 1)
        was_validated = p.validated
        p.validated = False
        for i in range(top, -1, -1):
            if not is_guest_l4_slot(i):
                continue
            rc = self._take("put_page_from_l4e", i)
            if rc is None or rc >= 0:
                continue
            if rc == -EINTR and i == top and was_validated:
                p.validated = True  # nothing done: the page is as it was
                return -EINTR
            if rc in (-ERESTART, -EINTR):
                p.partial, p.direction = True, "demote"
                p.nr_validated = i
                return -ERESTART
            raise ModelError(f"put_page_from_l4e cannot fail with {rc}")
        self._drop(p)
        if counted:
            self.nr_l4_pages -= 1
        return 0

    def _drop(self, p: Page) -> None:
        p.type, p.validated, p.partial, p.direction = "none", False, False, None
        p.count, p.nr_validated = 0, 0

    def _idle(self) -> int:
        return IDLE_SLOT

    # ------------------------------------------------------------------ fill / context
    def fill_ro_mpt(self, mfn: int) -> int | None:
        p = self._page(mfn)
        self.counters["fill_calls"] += 1
        if p.slot:
            return 0
        p.slot = self._idle()
        return 1

    def set_info_guest(self, *, vcpu: int = 0, vm_assist: int, self_domain: bool = False) -> int:
        if vcpu != 0:
            return 0
        mask = m2p_mask(self.constants)
        switching_on = bool(vm_assist & mask) and not self.vm_assist & mask
        walk = self._walk
        if walk is None and (
            switching_on
            and not self_domain
            and self.pv
            and not self.pv32
            and any(p.validated for p in self.pages.values())
        ):
            walk = self._walk = _Walk(len(self.page_list), vm_assist)
        if walk is not None:
            visited = 0
            while walk.remaining:
                mfn = self.page_list.pop(0)
                self.page_list.append(mfn)
                self.counters["list_removed"] += 1
                walk.remaining -= 1
                visited += 1
                p = self.pages[mfn]
                if p.lockable() and p.type == "l4":
                    self.fill_ro_mpt(mfn)
                if walk.remaining and visited % BATCH == 0 and self._preempt_check():
                    return -ERESTART
            self._walk = None
        self.vm_assist = vm_assist
        return 0

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "pages": [self.pages[m].as_state() for m in sorted(self.pages)],
            "page_list": list(self.page_list),
            "nr_l4_pages": self.nr_l4_pages,
            "vm_assist": self.vm_assist,
            "idle_slot": self._idle(),
            "locks": {"page_alloc_lock": 0, "page_locks_held": []},
            "counters": dict(self.counters),
            "map_balance": 0,
        }

    def expected_nr_l4(self) -> int:
        """The counter's specification: validated L4s plus those being devalidated."""
        return sum(
            1
            for p in self.pages.values()
            if p.type == "l4" and (p.validated or (p.partial and p.direction == "demote"))
        )


__all__ = [
    "BATCH",
    "CONSTANTS",
    "EINTR",
    "ERESTART",
    "IDLE_SLOT",
    "M2PModel",
    "ModelError",
    "Page",
    "m2p_mask",
]
