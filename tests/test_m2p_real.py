"""The Hypothesis state machine driving the tree's real code against the reference model.

Random sequences of pin / unpin (with injected preemption and failures) and vCPU 0
set-contexts run on the harness built from Debian's 4.17 (CI) and on the model; every
return is checked for lock balance and page-list integrity and compared with the
model where the specification is definite. A counterexample is shrunk to the shortest
sequence of operations.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from verifier.packs.m2p_strict.stateful import machine_for
from verifier.target import make_target

REAL = settings(max_examples=12, stateful_step_count=12, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.mark.debian
@pytest.mark.parametrize("own", [False, True])
def test_real_417_matches_the_model(xen_tree_417: Path, test_cache: Path, own: bool):
    def factory():
        return make_target(xen_tree_417, revision="4.17 as is", cache=test_cache)

    run_state_machine_as_test(machine_for(factory, self_context=own, nr_pages=6), settings=REAL)
