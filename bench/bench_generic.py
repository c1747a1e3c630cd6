"""Generic BUILD + BALANCE run time per ref, and paths per second: printed, nothing asserted.

    XEN_GIT=/path/to/xen .venv/bin/python bench/bench_generic.py [COMMIT...] [--cache DIR]

Each COMMIT (default: the worked example and the upstream fixes of tests/test_generic_real.py)
is checked as ``xen-verify check git:COMMIT --ref COMMIT^`` twice with one cache: the first
run prepares the trees and lifts the units (cold), the second reuses them (warm, what a
reviewer pays per ref after the first). Target (issue 9): a warm BUILD + BALANCE of a
one-function patch at most 10 s per ref.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.patch import load_series
from verifier.pipeline import verify
from verifier.tree import open_tree

DEFAULT = ("d80988cfc0", "8a62dee9ce", "62dde2c1ef")


def once(source, commit: str, cache: Path) -> tuple[float, object]:
    t0 = time.perf_counter()
    report = verify(load_series([f"git:{commit}"], source.git_dir), [(source, [f"{commit}^"])],
                    cache, command="bench")
    return time.perf_counter() - t0, report


def main() -> None:
    args = sys.argv[1:]
    cache_arg = None
    if "--cache" in args:
        i = args.index("--cache")
        cache_arg = Path(args[i + 1])
        del args[i:i + 2]
    commits = args or list(DEFAULT)
    if not os.environ.get("XEN_GIT"):
        print("XEN_GIT is not set: nothing to measure (set it to a clone of upstream Xen)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-generic-") as tmp:
        cache = cache_arg or Path(tmp)
        source = open_tree(os.environ["XEN_GIT"], cache)
        print(f"{'commit':12s} {'cold s':>7s} {'warm s':>7s} {'BALANCE':>16s} {'paths':>6s} "
              f"{'paths/s':>8s}  functions")
        for commit in commits:
            cold, _ = once(source, commit, cache)
            warm, report = once(source, commit, cache)
            (run,) = report.runs
            bal = next((c for c in run.checks if c.id == "BALANCE"), None)
            m = re.search(r"(\d+) paths in ([\d.]+)s", bal.detail if bal else "")
            paths, secs = (int(m.group(1)), float(m.group(2))) if m else (0, 0.0)
            rate = paths / secs if secs else 0.0
            names = ", ".join(f"{f.name}: {f.change}" for f in run.functions)
            print(f"{commit:12s} {cold:7.1f} {warm:7.1f} {bal.change if bal else '-':>16s} "
                  f"{paths:6d} {rate:8.1f}  {names}")


if __name__ == "__main__":
    main()
