"""How apply time grows with the number of hunks: figures printed, nothing asserted.

    .venv/bin/python bench/bench_big_patch.py [N...]

A hunk repeated N times on a small file of our own (the first applies, the rest
conflict): the target is time linear in N (the issue saw a hang at 3,000-20,000).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HUNK = "@@ -1,3 +1,3 @@ int f(void)\n int a;\n-int b;\n+int b = a + d;\n int d;\n"


def main(sizes: list[int]) -> None:
    with tempfile.TemporaryDirectory(prefix="xv-bench-") as td:
        repo = Path(td) / "repo"
        repo.mkdir()
        git = ["git", "-C", str(repo), "-c", "user.name=b", "-c", "user.email=b@b"]
        subprocess.run([*git, "init", "-q"], check=True)
        (repo / "x.c").write_text("int a;\nint b;\nint d;\n")
        subprocess.run([*git, "add", "x.c"], check=True)
        subprocess.run([*git, "commit", "-qm", "base"], check=True)
        for n in sizes:
            patch = Path(td) / f"h{n}.patch"
            patch.write_text("diff --git a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n" + HUNK * n)
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, "-m", "verifier", "check", str(patch), "--repo", str(repo),
                 "--no-checks", "--cache", str(Path(td) / "cache"), "-q"],
                capture_output=True, text=True, cwd=ROOT,
            )
            print(f"{n:>6} hunks: {time.monotonic() - t0:6.2f} s (exit {r.returncode})")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 3000, 10000, 20000])
