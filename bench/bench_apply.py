"""How long checkout + apply takes per ref: figures printed, nothing asserted.

    .venv/bin/python bench/bench_apply.py                  # the toy repository
    XEN_GIT=~/src/xen .venv/bin/python bench/bench_apply.py  # plus upstream refs

Targets: a 10-ref triage of one fix (its parent, the stable branches, master: clean,
missing-prerequisite and already-applied by backport marker or by the commit itself)
in at most 30 s on a full Xen tree, from a cold process (no cached history answers);
a ref whose status comes from git apply alone in about a second.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import toyrepo
from verifier import history
from verifier.apply import apply_series
from verifier.patch import load_series
from verifier.tree import checkout, open_tree, release_parked

SEED = Path(__file__).resolve().parent.parent / "patches" / "m2p-strict-v1.patch"
UPSTREAM_REFS = ["be05b5385f^", "be05b5385f", "stable-4.6", "stable-4.5", "master"]
# XSA-439's Zen1 DIV fix: clean on its parent, missing its predicate helper on 4.14,
# backported (marker) on 4.15-4.17, the commit itself from 4.18 on.
TRIAGE_FIX = "git:b5926c6ecf"
TRIAGE_REFS = ["b5926c6ecf^", "stable-4.14", "stable-4.15", "stable-4.16", "stable-4.17",
               "stable-4.18", "stable-4.19", "stable-4.20", "stable-4.22", "master"]


def bench(label: str, repo: str, patch: str, refs: list[str], cache: Path) -> float:
    """Each ref as ``verify_ref(..., checks=False)`` runs it, checkout and apply timed apart."""
    history.clear_caches()
    release_parked()
    source = open_tree(repo, cache)
    series = load_series([patch], source.git_dir)
    print(f"\n{label}")
    print(f"  {'ref':<14} {'status':<22} {'checkout':>8} {'apply':>8} {'seconds':>8}")
    start = time.perf_counter()
    for ref in refs:
        t = time.perf_counter()
        with checkout(source, ref, cache) as co:
            t_co = time.perf_counter() - t
            r = apply_series(series, co)
            t_apply = time.perf_counter() - t - t_co
        print(f"  {ref:<14} {r.status!s:<22} {t_co:8.2f} {t_apply:8.2f} "
              f"{time.perf_counter() - t:8.2f}")
    total = time.perf_counter() - start
    print(f"  {'total':<55} {total:8.2f}  ({len(refs)} refs)")
    return total


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, patch = toyrepo.build(root)
        bench("toy repository (tests/toyrepo.py)", str(repo), str(patch),
              ["written-on", "master", "near", "clash", "applied", "reworded", "old"],
              root / "cache")
        if os.environ.get("XEN_GIT"):
            xen = os.environ["XEN_GIT"]
            total = bench(f"10-ref triage of {TRIAGE_FIX} ({xen})", xen, TRIAGE_FIX,
                          TRIAGE_REFS, root / "cache")
            print(f"  10-ref triage: {total:.1f} s (target: at most 30 s; load average "
                  f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
            bench(f"the seed patch on upstream Xen ({xen})", xen, str(SEED), UPSTREAM_REFS,
                  root / "cache")
        else:
            print("\nXEN_GIT not set: upstream figures skipped")
        release_parked()


if __name__ == "__main__":
    main()
