"""How long the m2p-strict pack takes on one ref: figures printed, nothing asserted.

    .venv/bin/python bench/bench_pack.py [TREE...]

With no TREE, Debian bookworm's Xen (4.17) is imported into the test cache and used.
Target: the whole pack on one tree in seconds (issue: "seconds, not minutes").
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.packs.m2p_strict.checks import check_target
from verifier.target import make_target
from verifier.tree import cache_root, checkout


def bench(tree: Path, cache: Path) -> None:
    t0 = time.perf_counter()
    target = make_target(tree, revision=str(tree), cache=cache)
    t1 = time.perf_counter()
    try:
        runs = check_target(target, tree)
    finally:
        target.close()
    t2 = time.perf_counter()
    verdicts = " ".join(f"{k}:{v.outcome.value}" for k, v in sorted(runs.items()))
    print(f"{tree}\n  build+start {t1 - t0:6.2f} s   P1-P9 {t2 - t1:6.2f} s   {verdicts}")


def main() -> None:
    cache = cache_root(os.environ.get("XEN_VERIFY_TEST_CACHE")
                       or Path.home() / ".cache" / "xen-verify-tests")
    with ExitStack() as stack:
        trees = [Path(a) for a in sys.argv[1:]]
        if not trees:
            from verifier.debian import import_debian

            src = import_debian("bookworm", cache)
            trees = [stack.enter_context(checkout(src, src.default_ref, cache)).path]
        for tree in trees:
            bench(tree, cache)
            bench(tree, cache)  # second run: harness build cached by content hash


if __name__ == "__main__":
    main()
