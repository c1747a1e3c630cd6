"""The Target protocol and harness exceptions, from ``verifier.target`` when it exists.

``verifier/target.py`` is owned by the harness. Until it exists (or where it lacks a
name) this module supplies a copy of the interface described in the operations brief,
so the pack can be developed and unit-tested on its own. Local stand-ins subclass the
harness's own ``HarnessFailure`` when that exists, so ``except HarnessFailure`` in the
scenarios catches both.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

try:  # pragma: no cover - depends on the harness helper's progress
    from verifier import target as _target
except Exception:  # absent (ImportError) or broken: the pack still imports  # pragma: no cover
    _target = None  # type: ignore[assignment]


class _HarnessFailure(Exception):
    """The code under test misbehaved: crash, hang, unexpected call, lock or list damage."""

    def __init__(
        self, message: str = "", *, trace: list[str] | None = None, location: str | None = None
    ) -> None:
        super().__init__(message)
        self.trace: list[str] = list(trace or [])
        self.location: str | None = location


HarnessFailure: type[Exception] = getattr(_target, "HarnessFailure", _HarnessFailure)


def _failure(name: str, doc: str) -> type[Exception]:
    existing = getattr(_target, name, None)
    if existing is not None:
        return existing
    base = HarnessFailure if HarnessFailure is not _HarnessFailure else _HarnessFailure
    return type(name, (base,), {"__doc__": doc})


HarnessCrash = _failure("HarnessCrash", "The harness died on a signal or sanitizer report.")
HarnessHang = _failure("HarnessHang", "The harness did not return within its time limit.")
UnexpectedCall = _failure("UnexpectedCall", "The code called a function nobody modelled.")
LockImbalance = _failure("LockImbalance", "A lock was left held (or released twice) on return.")
ListCorruption = _failure("ListCorruption", "d->page_list lost, duplicated or mislinked a page.")


class _HarnessError(Exception):
    """The tool could not run the check (not a failure of the code under test)."""


HarnessError: type[Exception] = getattr(_target, "HarnessError", _HarnessError)


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


if _target is not None and hasattr(_target, "Target"):  # pragma: no cover
    Target = _target.Target  # type: ignore[misc]


def make_failure(
    cls: type[Exception],
    message: str,
    *,
    trace: list[str] | None = None,
    location: str | None = None,
    output: str = "",
) -> Exception:
    """An instance of a harness failure class whatever its constructor's signature."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.trace = list(trace or [])  # type: ignore[attr-defined]
    exc.location = location  # type: ignore[attr-defined]
    exc.output = output  # type: ignore[attr-defined]
    return exc


def failure_trace(exc: BaseException) -> list[str]:
    return list(getattr(exc, "trace", None) or [])


def failure_location(exc: BaseException) -> str | None:
    return getattr(exc, "location", None)


__all__ = [
    "HarnessCrash",
    "HarnessError",
    "HarnessFailure",
    "HarnessHang",
    "ListCorruption",
    "LockImbalance",
    "Target",
    "UnexpectedCall",
    "failure_location",
    "failure_trace",
    "make_failure",
]
