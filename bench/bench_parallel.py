"""Refs in parallel: the seed on 4 upstream refs with -j 1 and -j 2; figures printed,
nothing asserted.

    XEN_GIT=~/src/xen .venv/bin/python bench/bench_parallel.py [REPEATS]

Each run gets a fresh cache (so harnesses are built every time, as on a first run) and
runs the whole pipeline with checks: checkout, apply, harness builds and scenarios.
Target: on a 2-core machine, -j 2 clearly faster than -j 1 (the refs are independent;
what is left serial is resolving refs and opening the tree), and close to 2 cores busy.
On a shared machine the figures depend on the others' load: "cores busy" (CPU seconds
over wall seconds) says how much of the machine the run got. Without XEN_GIT the toy
repository is used (apply only: a measure of the process overhead, not of the speed-up).
"""

from __future__ import annotations

import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import toyrepo
from verifier.patch import load_series
from verifier.pipeline import verify
from verifier.tree import open_tree

SEED = Path(__file__).resolve().parent.parent / "patches" / "m2p-strict-v1.patch"
UPSTREAM_REFS = ["be05b5385f^", "stable-4.6", "stable-4.5", "master"]
TOY_REFS = ["written-on", "master", "near", "old"]


def _cpu() -> float:
    """CPU seconds of this process and every child it waited for (refs, git, gcc, drivers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def once(repo: str, patch: str, refs: list[str], jobs: int,
         checks: bool) -> tuple[float, float, str]:
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        cache = Path(tmp)
        source = open_tree(repo, cache)
        series = load_series([patch], source.git_dir)
        t, cpu = time.perf_counter(), _cpu()
        report = verify(series, [(source, refs)], cache, command="bench", checks=checks,
                        jobs=jobs)
        seconds, cpu = time.perf_counter() - t, _cpu() - cpu
    return seconds, cpu, " ".join(f"{r.ref}={r.verdict}" for r in report.runs)


def main() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    with tempfile.TemporaryDirectory() as tmp:
        if os.environ.get("XEN_GIT"):
            label, repo, patch, refs, checks = (f"upstream Xen ({os.environ['XEN_GIT']})",
                                                os.environ["XEN_GIT"], str(SEED),
                                                UPSTREAM_REFS, True)
        else:
            repo_path, patch_path = toyrepo.build(Path(tmp))
            label, repo, patch, refs, checks = ("toy repository, apply only", str(repo_path),
                                                str(patch_path), TOY_REFS, False)
        print(f"{label}: {len(refs)} refs ({', '.join(refs)}), {os.cpu_count()} cores")
        times: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(repeats):
            for jobs in (1, 2):
                seconds, cpu, verdicts = once(repo, patch, refs, jobs, checks)
                times[jobs].append(seconds)
                print(f"  -j {jobs}: {seconds:7.1f} s wall, {cpu:7.1f} s CPU "
                      f"({cpu / seconds:.2f} cores busy)   {verdicts}", flush=True)
        one, two = statistics.median(times[1]), statistics.median(times[2])
        print(f"median -j 1: {one:.1f} s, -j 2: {two:.1f} s, speed-up {one / two:.2f}x")
        print(f"load average now: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other "
              "users' work shares the cores: with the kernel's autogroup scheduling a "
              "session gets its share, however many processes it runs)")


if __name__ == "__main__":
    main()
