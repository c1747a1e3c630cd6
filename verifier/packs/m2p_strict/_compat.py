"""The harness interface the pack uses, from ``verifier.target``, plus small helpers.

The pack was written beside the harness against the same operations brief; now the
harness exists, this module only re-exports its names (one definition of the
protocol and of the failure classes) and adds helpers that read failures uniformly.
"""

from __future__ import annotations

from verifier.target import (
    HarnessCrash,
    HarnessError,
    HarnessFailure,
    HarnessHang,
    ListCorruption,
    LockImbalance,
    Target,
    UnexpectedCall,
)


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
