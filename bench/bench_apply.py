"""How long checkout + apply takes per ref: figures printed, nothing asserted.

    .venv/bin/python bench/bench_apply.py                  # the toy repository
    XEN_GIT=~/src/xen .venv/bin/python bench/bench_apply.py  # plus upstream refs

Targets: a ref whose status comes from git apply alone (clean, offsets, conflict) in
about a second on a full Xen tree; an equivalent-commit search in a few seconds; a
missing-prerequisite search under ~15 s for a handful of symbols.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import toyrepo
from verifier.patch import load_series
from verifier.pipeline import verify_ref
from verifier.tree import open_tree

SEED = Path(__file__).resolve().parent.parent / "patches" / "m2p-strict-v1.patch"
UPSTREAM_REFS = ["be05b5385f^", "be05b5385f", "stable-4.6", "stable-4.5", "master"]


def bench(label: str, repo: str, patch: str, refs: list[str], cache: Path) -> None:
    source = open_tree(repo, cache)
    series = load_series([patch], source.git_dir)
    print(f"\n{label}")
    print(f"  {'ref':<14} {'status':<22} {'seconds':>8}")
    for ref in refs:
        t = time.perf_counter()
        r = verify_ref(series, source, ref, cache, checks=False)
        print(f"  {ref:<14} {r.apply.status!s:<22} {time.perf_counter() - t:8.2f}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, patch = toyrepo.build(root)
        bench("toy repository (tests/toyrepo.py)", str(repo), str(patch),
              ["written-on", "master", "near", "clash", "applied", "reworded", "old"],
              root / "cache")
        if os.environ.get("XEN_GIT"):
            bench(f"upstream Xen ({os.environ['XEN_GIT']})", os.environ["XEN_GIT"], str(SEED),
                  UPSTREAM_REFS, root / "cache")
        else:
            print("\nXEN_GIT not set: upstream figures skipped")


if __name__ == "__main__":
    main()
