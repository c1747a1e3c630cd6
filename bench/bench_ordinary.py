"""Generic mode on ordinary upstream commits: how many touched functions are lifted and
judged, why the others are not, and any REGRESSION (on an ordinary commit, a false
alarm). Figures printed, nothing asserted.

    XEN_GIT=/path/to/xen .venv/bin/python bench/bench_ordinary.py [N] [--since DATE]
                                                                  [--cache DIR] [COMMIT...]

Without COMMITs, N (default 12) commits are sampled evenly from master's non-merge
history since DATE (default 2021-01-01) among those that change x86 or common
hypervisor C (xen/arch/x86, xen/common). Each is checked as ``xen-verify check
git:COMMIT --ref COMMIT^`` (generic mode and whatever pack concerns it). Target (issue
9): at least 80 % of the touched functions lifted and explored, each other one saying
why; no REGRESSION.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.patch import load_series
from verifier.pipeline import verify
from verifier.tree import open_tree


def sample(git: str, n: int, since: str) -> list[str]:
    out = subprocess.run(
        ["git", "-C", git, "log", "--no-merges", "--format=%h", f"--since={since}", "master",
         "--", "xen/arch/x86/*.c", "xen/arch/x86/**/*.c", "xen/common/*.c",
         "xen/common/**/*.c"], capture_output=True, text=True, check=True).stdout.split()
    if len(out) <= n:
        return out
    step = len(out) / n
    return [out[int(i * step)] for i in range(n)]


def main() -> None:
    args = sys.argv[1:]
    git = os.environ.get("XEN_GIT")
    if not git:
        print("XEN_GIT is not set: this bench needs upstream Xen history")
        return
    cache = None
    since = "2021-01-01"
    if "--cache" in args:
        i = args.index("--cache")
        cache = Path(args[i + 1])
        del args[i:i + 2]
    if "--since" in args:
        i = args.index("--since")
        since = args[i + 1]
        del args[i:i + 2]
    n = int(args.pop(0)) if args and args[0].isdigit() else 12
    commits = args or sample(git, n, since)
    with tempfile.TemporaryDirectory(prefix="bench-ordinary-") as tmp:
        cache = cache or Path(tmp)
        source = open_tree(git, cache)
        total = lifted = judged = regressions = outside = 0
        why: Counter[str] = Counter()
        paths = 0
        seconds = 0.0
        for commit in commits:
            t0 = time.perf_counter()
            try:
                report = verify(load_series([f"git:{commit}"], source.git_dir),
                                [(source, [f"{commit}^"])], cache, command="bench")
            except Exception as e:  # a bench goes on: the failure is a figure too
                print(f"{commit}: failed: {e}")
                continue
            took = time.perf_counter() - t0
            seconds += took
            run = report.runs[0]
            fns = run.functions
            n_l = sum(1 for f in fns if f.lifted)
            n_j = sum(1 for f in fns if f.lifted and f.change != "error")
            n_r = sum(1 for f in fns if f.change == "REGRESSION")
            outside += sum(1 for f in fns if "not in this x86 build" in f.reason)
            total, lifted, judged, regressions = (total + len(fns), lifted + n_l,
                                                  judged + n_j, regressions + n_r)
            paths += sum((f.paths.base or 0) + (f.paths.patched or 0) for f in fns)
            checks = " ".join(f"{c.id}={c.change}" for c in run.checks if c.pack == "generic")
            print(f"{commit} {run.apply.status}: {len(fns)} functions, {n_l} lifted, "
                  f"{n_j} judged, {n_r} REGRESSION; {checks} ({took:.0f} s) "
                  f"{report.series.subject[:50]!r}", flush=True)
            for f in fns:
                if f.change in ("REGRESSION", "error") or not f.lifted:
                    reason = f.reason or "-"
                    print(f"    {f.name}: {f.change}: {reason[:160]}")
                    why[reason.split(":")[0] + ": " + reason.split(":")[1].strip()[:40]
                        if ":" in reason else reason] += 1
                for v in f.violations.patched if f.change == "REGRESSION" else ():
                    print(f"      {v.kind} {v.resource} rc {v.rc} at {v.returned_at}; "
                          f"{'; '.join(v.choices)[:200]}")
        if total:
            print(f"\n{len(commits)} commits, {total} touched functions: {lifted} lifted "
                  f"({100 * lifted / total:.0f} %), {judged} judged ({100 * judged / total:.0f} "
                  f"%), {regressions} REGRESSION; {paths} paths in {seconds:.0f} s")
            built = total - outside
            if outside and built:
                print(f"  of the {built} in units the x86 build compiles ({outside} are in "
                      f"units it leaves out): {100 * lifted / built:.0f} % lifted, "
                      f"{100 * judged / built:.0f} % judged")
            for reason, count in why.most_common(8):
                print(f"  {count:3d} x {reason}")


if __name__ == "__main__":
    main()
