"""The Target protocol, the harness failures, and ``HarnessTarget`` over a harness process.

A *target* runs the operations of the operations brief: the reference model
implements them in Python, ``HarnessTarget`` by sending them to a built harness
(``verifier.harness`` + ``verifier.run``) that runs the tree's own C text.

Failures of the code under test raise a ``HarnessFailure`` subclass carrying the
operation trace and, when known, the tree ``file:line``; a tool problem (gcc
missing, role not found, bad build) raises ``HarnessError``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from verifier.model import VerifyError


class HarnessError(VerifyError):
    """The tool could not build or drive the harness (not the code under test's fault)."""


class HarnessFailure(Exception):
    """The code under test misbehaved: crash, hang, unexpected call, lock or list damage."""

    def __init__(
        self,
        message: str = "",
        *,
        trace: list[str] | None = None,
        location: str | None = None,
        output: str = "",
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.trace: list[str] = list(trace or [])
        self.location: str | None = location
        self.output: str = output
        for k, v in extra.items():
            setattr(self, k, v)


class HarnessCrash(HarnessFailure):
    """Died on a signal, a sanitizer report or a failed ASSERT (``.signal``, ``.output``)."""

    signal: int | None = None


class SandboxViolation(HarnessFailure):
    """The code tried what the sandbox forbids (``.attempt``: "open a socket", ...)."""

    attempt: str = ""


class HarnessHang(HarnessFailure):
    """No reply within the time limit (``.timeout``, ``.last_op``)."""

    timeout: float = 0.0
    last_op: str = ""


class UnexpectedCall(HarnessFailure):
    """The code called a function nobody modelled (``.name``)."""

    name: str = ""


class LockImbalance(HarnessFailure):
    """A lock left held, released twice, or spun on while held (``.detail``)."""

    detail: str = ""


class ListCorruption(HarnessFailure):
    """d->page_list lost, duplicated or mislinked a page (``.detail``)."""

    detail: str = ""


@runtime_checkable
class Target(Protocol):
    """What a live harness and the reference model both offer (see the operations brief)."""

    revision: str
    constants: dict[str, Any]

    def reset(
        self, nr_pages: int, *, pv: bool = True, pv32: bool = False, vm_assist: int = 0
    ) -> None: ...

    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int: ...

    def unpin_l4(self, mfn: int, *, preemptible: bool = True) -> int: ...

    def set_info_guest(
        self, *, vcpu: int = 0, vm_assist: int, self_domain: bool = False
    ) -> int: ...

    def fill_ro_mpt(self, mfn: int) -> int | None: ...

    def set_slot(self, mfn: int, value: int) -> None: ...

    def set_preempt(self, mode: str, n: int = 0) -> None: ...

    def inject(self, fn: str, *, entry: int, rc: int) -> None: ...

    def hold_page_lock(self, mfn: int, held: bool = True) -> None: ...

    def state(self) -> dict: ...


PREEMPT_MODES = ("never", "always", "every", "at")
# A harness that hangs is killed at the operation timeout and restarted for the next
# scenario; after the first hang the timeout drops to RETRY_TIMEOUT, and after
# HANG_BUDGET hangs the target refuses further operations (an ``error``: not run), so a
# spinning patch costs seconds, not a timeout per scenario.
HANG_BUDGET = 3
RETRY_TIMEOUT = 1.0
# One harness operation: the slowest a check pack makes (P4's 16384-page walk) takes
# 0.04 s on bookworm's tree, so 4 s is a hundredfold margin for a loaded machine, and a
# spinning patch costs 4 + 1 s, not minutes.
OP_TIMEOUT = 4.0
# extract.ROLES keys -> the role names of the m2p_strict check pack's declaration
PACK_ROLE_NAMES = {
    "restore_fixup": "restore fixup block",
    "fill_ro_mpt": "RO_MPT slot filler",
    "l4_validate": "L4 validator",
    "l4_devalidate": "L4 devalidator",
    "l4_slot_init": "L4 slot initialiser",
    "page_lock": "page lock",
}


class HarnessTarget:
    """A Target backed by a running harness process (the tree's real code).

    Real roles: ``fill_ro_mpt``, ``restore_fixup`` (set_info_guest), ``page_lock`` and,
    with ``real_pin`` (always, for a tree), ``l4_validate``/``l4_devalidate``/
    ``l4_slot_init`` behind pin_l4/unpin_l4, the driver playing get/put_page_type's part.
    Without it pin_l4/unpin_l4 are *emulated* (``emulated`` names them; ``notes`` says why)
    and injecting into get/put_page_from_l4e is refused.
    """

    def __init__(
        self,
        built: Any,
        *,
        label: str = "",
        timeout: float = OP_TIMEOUT,
        blocked: SandboxViolation | None = None,
    ) -> None:
        from verifier.run import HarnessProcess

        self.built = built
        sources = built.sources if built is not None else None
        self.pieces = sources.pieces if sources else dict(getattr(blocked, "pieces", {}) or {})
        self.revision = label or (sources.label if sources else "")
        self.timeout = timeout
        self.real_pin = bool(sources and sources.real_pin)
        self.emulated: set[str] = set() if self.real_pin else {"pin_l4", "unpin_l4"}
        self.roles: dict[str, str | None] = {
            role: (p.location if p is not None else None) for role, p in self.pieces.items()
        }
        self.op_seconds: list[float] = []
        self.restarts = 0  # processes started again by reset() after a failure
        self.notes: list[str] = []
        self.hangs = 0
        # Built from text the sandbox refused (e.g. an #include of a device): every
        # operation fails with that violation, so each scenario reports what was tried.
        self.blocked = blocked
        self._nr_pages = 0
        if blocked is not None:
            from verifier.harness import MAX_PAGES

            self._proc = None
            self.constants: dict[str, Any] = {"max_pages": MAX_PAGES}
            self._pv64 = True
            self._injected: dict[str, tuple[int, int]] = {}
            return
        self._proc = HarnessProcess(built.exe, timeout=timeout)
        self.constants = self._proc.call("constants", record=False)
        self.constants.pop("ok", None)
        self._pv64 = True
        self._injected: dict[str, tuple[int, int]] = {}

    @property
    def locations(self) -> dict[str, str]:
        """Check-pack role names (declaration.py) -> tree ``file:first-last`` of the real code."""
        out = {}
        for role, pack_name in PACK_ROLE_NAMES.items():
            piece = self.pieces.get(role)
            if piece is not None:
                out[pack_name] = piece.location
        return out

    # ------------------------------------------------------------------ plumbing

    @property
    def trace(self) -> list[str]:
        return list(self._proc.trace) if self._proc is not None else []

    def _raw(self, command: str, *, record: bool = True) -> dict:
        """One operation, within the hang budget (see HANG_BUDGET)."""
        if self.blocked is not None:
            b = self.blocked
            raise SandboxViolation(str(b), trace=[command], output=b.output, attempt=b.attempt)
        if self.hangs >= HANG_BUDGET:
            raise HarnessError(
                f"{self.revision}: not run: the harness hung {self.hangs} times; "
                "later operations are not tried"
            )
        assert self._proc is not None
        timeout = min(self.timeout, RETRY_TIMEOUT) if self.hangs else None
        try:
            return self._proc.call(command, record=record, timeout=timeout)
        except HarnessHang:
            self.hangs += 1
            raise

    def _call(self, command: str) -> dict:
        t0 = time.monotonic()
        try:
            return self._raw(command)
        finally:
            self.op_seconds.append(time.monotonic() - t0)

    def _need(self, role: str) -> None:
        if self.pieces.get(role) is None:
            raise HarnessError(f"{self.revision}: role {role} is absent in this tree")

    def close(self) -> None:
        if self._proc is not None:
            self._proc.close()

    def __enter__(self) -> HarnessTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ operations

    def reset(
        self, nr_pages: int, *, pv: bool = True, pv32: bool = False, vm_assist: int = 0
    ) -> None:
        if not 0 <= nr_pages <= int(self.constants.get("max_pages", 0)):
            raise HarnessError(f"nr_pages {nr_pages} outside 0..{self.constants.get('max_pages')}")
        if self._proc is None:  # blocked: the operation says why
            self._call(f"reset {nr_pages}")
        assert self._proc is not None
        if not self._proc.alive:  # a failure ended the last run: start a fresh process
            from verifier.run import HarnessProcess

            self._proc.close()
            self._proc = HarnessProcess(self.built.exe, timeout=self.timeout)
            self.restarts += 1
        self._proc.trace.clear()
        self._nr_pages = nr_pages
        self._pv64 = pv and not pv32
        self._injected.clear()
        self._call(f"reset {nr_pages} {int(pv)} {int(pv32)} {int(vm_assist)}")

    def _page(self, mfn: int) -> dict:
        return self.state()["pages"][mfn]

    def pin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        if self.real_pin:
            return int(self._call(f"pin {mfn} {int(preemptible)}")["rc"])
        return self._pin_emulated(mfn)

    def unpin_l4(self, mfn: int, *, preemptible: bool = True) -> int:
        if self.real_pin:
            return int(self._call(f"unpin {mfn} {int(preemptible)}")["rc"])
        return self._unpin_emulated(mfn)

    def _pin_emulated(self, mfn: int) -> int:
        """Emulated validation (see the class docstring): type, count, slot and counter.

        An injected ``get_page_from_l4e`` failure is taken once: -ERESTART (or -EINTR
        after entry 0) leaves the page partial and returns -ERESTART; any other error
        drops the type and is returned.
        """
        c = self.constants
        st = self.state()
        page = st["pages"][mfn]
        l4 = c["PGT_l4_page_table"]
        if page["type"] == "l4" and page["validated"]:
            self._call(f"set_type {mfn} {page['type_info'] + 1}")
            return 0
        inj = self._injected.pop("get_page_from_l4e", None)
        if inj is not None and inj[1] < 0:
            entry, rc = inj
            if rc == -c["ERESTART"] or (rc == -c["EINTR"] and entry):
                self._call(f"set_type {mfn} {l4 | c['PGT_partial'] | 1}")
                self._note(f"pin_l4 {mfn} (emulated) -> partial at {entry}")
                return -c["ERESTART"]
            self._call(f"set_type {mfn} 0")
            self._note(f"pin_l4 {mfn} (emulated) -> {rc}")
            return rc
        strict = c["m2p_strict_bit"] >= 0 and (st["vm_assist"] >> c["m2p_strict_bit"]) & 1
        slot = c["idle_slot"] if strict and self._pv64 else 0
        self._call(f"set_slot {mfn} {slot}")
        self._call(f"set_type {mfn} {l4 | c['PGT_validated'] | c['PGT_pinned'] | 1}")
        if c["has_counter"]:
            self._call(f"add_l4 {mfn} 1")
        self._note(f"pin_l4 {mfn} (emulated)")
        return 0

    def _unpin_emulated(self, mfn: int) -> int:
        """Emulated devalidation: drops a reference, or the type (and the counter)."""
        page = self._page(mfn)
        if page["type"] != "l4":
            return -22
        if page["validated"] and page["count"] > 1:
            self._call(f"set_type {mfn} {page['type_info'] - 1}")
            return 0
        self._call(f"set_type {mfn} 0")
        if self.constants["has_counter"] and page["validated"]:
            self._call(f"add_l4 {mfn} -1")
        self._note(f"unpin_l4 {mfn} (emulated)")
        return 0

    def set_info_guest(self, *, vcpu: int = 0, vm_assist: int, self_domain: bool = False) -> int:
        self._need("restore_fixup")
        return int(self._call(f"set_info {vcpu} {int(vm_assist)} {int(self_domain)}")["rc"])

    def fill_ro_mpt(self, mfn: int) -> int | None:
        self._need("fill_ro_mpt")
        rc = self._call(f"fill {mfn}")["rc"]
        return None if rc is None else int(rc)

    def set_slot(self, mfn: int, value: int) -> None:
        self._call(f"set_slot {mfn} {int(value)}")

    def set_type(self, mfn: int, type_info: int) -> None:
        """Harness-only: write a page's type_info directly (plays get_page_type's part)."""
        self._call(f"set_type {mfn} {int(type_info)}")

    def set_preempt(self, mode: str, n: int = 0) -> None:
        if mode not in PREEMPT_MODES:
            raise HarnessError(f"unknown preemption mode {mode!r} (one of {PREEMPT_MODES})")
        self._call(f"preempt {mode} {int(n)}")

    def inject(self, fn: str, *, entry: int, rc: int) -> None:
        if self.real_pin and fn in ("get_page_from_l4e", "put_page_from_l4e"):
            self._call(f"inject {fn[:3]} {int(entry)} {int(rc)}")
            return
        if fn in ("get_page_from_l4e", "put_page_from_l4e") and "pin_l4" in self.emulated:
            raise HarnessError(
                f"inject {fn}: this harness emulates L4 (de)validation; the tree's validator "
                "is not wired yet, so injected failures would test the emulation"
            )
        self._injected[fn] = (entry, rc)
        self._note(f"inject {fn} entry={entry} rc={rc}")

    def hold_page_lock(self, mfn: int, held: bool = True) -> None:
        self._call(f"hold {mfn} {int(held)}")

    def state(self) -> dict:
        st = self._raw("state", record=False)
        st.pop("ok", None)
        return st

    def _note(self, line: str) -> None:
        if self._proc is not None:
            self._proc.trace.append(line)


def open_target(
    tree: Path | None,
    cache_dir: Path,
    commit: str | None = None,
    label: str = "",
    *,
    timeout: float = OP_TIMEOUT,
    pieces: dict | None = None,
    constants_text: str | None = None,
    mutate: str | None = None,
    real_pin: bool | None = None,
    revision: str = "",
) -> HarnessTarget:
    """Generate, build (cached) and start the harness for ``tree``; use as a context manager.

    ``pieces``/``constants_text`` replace the tree's roles and constants (test fixtures);
    only they may ask for the emulated validator (``real_pin=False``). ``label`` names
    the tree inside the generated files, ``revision`` the target in reports.
    """
    from verifier import harness

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if real_pin is None:  # a tree's own validator, always: no silent emulation
        real_pin = tree is not None
    try:
        src = harness.generate(
            Path(tree) if tree is not None else None,
            pieces,
            commit=commit,
            label=label,
            constants_text=constants_text,
            mutate=mutate,
            real_pin=real_pin,
        )
        built = harness.build(src, cache_dir)
    except SandboxViolation as e:  # the patch's text tried it at build time
        return HarnessTarget(None, label=revision or label or str(tree), timeout=timeout,
                             blocked=e)
    return HarnessTarget(built, label=revision or label or src.label, timeout=timeout)


def make_target(
    tree: Path,
    *,
    revision: str = "",
    cache: Path,
    mutate: str | None = None,
    timeout: float = OP_TIMEOUT,
    commit: str | None = None,
    label: str = "",
) -> HarnessTarget:
    """The check pack's factory: a started harness target for ``tree`` (cache: tool cache).

    The sources are ``harness.tree_sources``'s, as ``xen-verify harness`` writes them.
    """
    return open_target(
        Path(tree), Path(cache) / "harness", commit=commit, label=label or str(tree),
        timeout=timeout, mutate=mutate, real_pin=True,
        revision=revision + (f" [{mutate}]" if mutate else ""),
    )


__all__ = [
    "HarnessCrash",
    "HarnessError",
    "HarnessFailure",
    "HarnessHang",
    "HarnessTarget",
    "ListCorruption",
    "LockImbalance",
    "SandboxViolation",
    "Target",
    "UnexpectedCall",
    "make_target",
    "open_target",
]
