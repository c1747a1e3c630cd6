"""Hypothesis stateful testing: random operation sequences on a target and the model.

``machine_for(factory)`` returns a ``RuleBasedStateMachine`` class whose rules apply
the same operation to a fresh target (``factory()``) and to the reference model through
a :class:`~.scenarios.Driver`; every step checks locks, the page list and the state
against the specification, so a divergence fails with a shrunk sequence of operations.

The operation space stays where the specification is definite: once set, m2p_strict
is not cleared again (that path is P7's finding), it is not switched on while an L4's
devalidation is preempted (P3's "no lockable L4" finding), and injected failures are
placed where the operation reaches them. Hypothesis is a test dependency: imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._compat import Target
from .scenarios import Driver


def machine_for(
    factory: Callable[[], Target],
    *,
    nr_pages: int = 6,
    self_context: bool = True,
    pv32: bool = False,
) -> type:
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

    class M2PMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.d = Driver(factory())

        @initialize()
        def start(self) -> None:
            self.d.reset(nr_pages, pv32=pv32)

        def _restart(self) -> int:
            return -int(self.d.c["ERESTART"])

        @rule(
            data=st.data(),
            inject=st.sampled_from([None, "restart", "eintr", "error"]),
        )
        def pin(self, data: Any, inject: str | None) -> None:
            pages = self.d.m.pages
            cands = [
                m
                for m, p in pages.items()
                if not p.validated and not (p.partial and p.direction == "demote")
            ]
            if not cands:
                return
            m = data.draw(st.sampled_from(cands), label="mfn")
            p = pages[m]
            start = p.nr_validated if p.partial else 0
            if inject:
                entry = data.draw(
                    st.sampled_from([e for e in (0, 1, 9, 255, 400) if e >= start] or [400]),
                    label="entry",
                )
                if inject == "error" and entry:
                    inject = "restart"  # errors after progress: see random_contract
                rc = {"restart": self._restart(), "eintr": -int(self.d.c["EINTR"]), "error": -22}[
                    inject
                ]
                self.d.inject("get_page_from_l4e", entry, rc)
            self.d.pin(m)
            self.d.compare(self.d.trace[-1])

        @rule(data=st.data(), inject=st.sampled_from([None, "restart", "eintr"]))
        def unpin(self, data: Any, inject: str | None) -> None:
            pages = self.d.m.pages
            cands = [
                m
                for m, p in pages.items()
                if p.validated or (p.partial and p.direction == "demote")
            ]
            if not cands:
                return
            m = data.draw(st.sampled_from(cands), label="mfn")
            p = pages[m]
            top = 511 if p.validated else p.nr_validated
            if inject:
                entry = data.draw(
                    st.sampled_from([e for e in (511, 300, 100, 0) if e <= top]), label="entry"
                )
                rc = self._restart() if inject == "restart" else -int(self.d.c["EINTR"])
                self.d.inject("put_page_from_l4e", entry, rc)
            self.d.unpin(m)
            self.d.compare(self.d.trace[-1])

        @rule(
            vcpu=st.sampled_from([0, 0, 1]),
            own=st.booleans() if self_context else st.just(False),
            strict=st.booleans(),
            preempt=st.sampled_from([("never", 0), ("always", 0), ("at", 1), ("every", 2)]),
        )
        def set_context(self, vcpu: int, own: bool, strict: bool, preempt: tuple) -> None:
            if self.d.m.m2p_strict and not strict:
                strict = True  # never cleared again: P7's business
            demoting = any(p.partial and p.direction == "demote" for p in self.d.m.pages.values())
            if strict and demoting and vcpu == 0 and not own:
                return  # counted L4 that cannot be locked: P3's no_lockable_l4 finding
            self.d.set_preempt(*preempt)
            self.d.set_context(self.d.m2p if strict else 0, vcpu=vcpu, self_domain=own)
            self.d.set_preempt("never")

        @invariant()
        def counter(self) -> None:
            st_ = self.d.last_state
            got = st_.get("nr_l4_pages") if st_ else None
            if got is not None and got != self.d.m.expected_nr_l4():
                from .scenarios import ScenarioFailure

                raise ScenarioFailure(
                    f"nr_l4_pages is {got}, expected {self.d.m.expected_nr_l4()}",
                    self.d.last_state_text,
                )

        def teardown(self) -> None:
            # Hypothesis prints the shrunk rules; the driver's trace says what the target saw.
            self.trace = list(self.d.trace)
            close = getattr(self.d.t, "close", None)
            if callable(close):  # a harness target is a process: one per example
                close()

    M2PMachine.__name__ = "M2PMachine"
    return M2PMachine


__all__ = ["machine_for"]
