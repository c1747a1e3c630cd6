"""How long preparing a tree's build and the BUILD check take: figures printed, nothing asserted.

    .venv/bin/python bench/bench_build.py [REF...]

With XEN_GIT set, each REF (default: stable-4.11 stable-4.14 stable-4.17 master) is exported
from that repository; without it, Debian bookworm's Xen (4.17) is imported into the test
cache and used. For each tree:
- prepare, cold: into an empty cache (CPU time of the build's processes, and wall time);
- prepare, warm: a second fresh export of the same ref, restored from that cache;
- per unit: recording its command (``make -n``, once per cache entry), and compiling it with
  the tree's flags (what BUILD does twice, base and patched, per touched unit).
Targets (issue 9): preparing at most 3 CPU-minutes, once per ref; a warm BUILD (+ BALANCE)
of a one-function patch at most 10 s per ref.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from verifier.build import compile_unit, export_commit, prepare_tree
from verifier.generic.build_check import build_check
from verifier.tree import cache_root, open_tree, resolve

UNITS = ("xen/arch/x86/mm.c", "xen/common/grant_table.c", "xen/arch/x86/mm/p2m.c",
         "xen/arch/x86/mm/shadow/multi.c")


def _cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system + t.user + t.system


def bench(source, ref: str, scratch: Path) -> None:
    sha, _ = resolve(source, ref)
    cache = scratch / f"cache-{sha[:12]}"
    cold_root = export_commit(source.git_dir, sha, scratch / f"cold-{sha[:12]}")
    c0, w0 = _cpu(), time.perf_counter()
    cold = prepare_tree(cold_root, cache)
    c1, w1 = _cpu(), time.perf_counter()
    print(f"{ref} ({sha[:12]})")
    if not cold.ok:
        print(f"  prepare: n/a: {cold.reason}")
        return
    print(f"  prepare, cold   {c1 - c0:6.1f} s CPU  {w1 - w0:6.1f} s wall  (key {cold.key[:12]})")
    warm_root = export_commit(source.git_dir, sha, scratch / f"warm-{sha[:12]}")
    c0, w0 = _cpu(), time.perf_counter()
    warm = prepare_tree(warm_root, cache)
    c1, w1 = _cpu(), time.perf_counter()
    print(f"  prepare, warm   {c1 - c0:6.1f} s CPU  {w1 - w0:6.1f} s wall  (cached: {warm.cached})")
    for unit in UNITS:
        if not (warm_root / unit).is_file():
            continue
        w0 = time.perf_counter()
        cmds = cold.unit_commands(unit)
        w1 = time.perf_counter()
        cmds_again = warm.unit_commands(unit)
        w2 = time.perf_counter()
        if not cmds:
            print(f"  {unit}: no command")
            continue
        result = compile_unit(warm, unit)
        w3 = time.perf_counter()
        print(f"  {unit:36s} command {w1 - w0:5.2f} s (cached {w2 - w1:5.2f} s, "
              f"{len(cmds_again)} object(s))  compile {w3 - w2:5.2f} s  "
              f"rc {result.returncode}, {len(result.errors)} error(s), "
              f"{len(result.warnings)} warning(s)")
    # A warm BUILD as a run does it: base compiled before (its result kept), the patched
    # tree a fresh export with a one-line change, restored from the cache.
    unit = "xen/common/grant_table.c"
    compile_unit(cold, unit)
    w0 = time.perf_counter()
    patched_root = export_commit(source.git_dir, sha, scratch / f"patched-{sha[:12]}")
    with open(patched_root / unit, "a") as f:
        f.write("/* a one-line change */\n")
    patched = prepare_tree(patched_root, cache)
    check = build_check(cold, patched, [unit])
    w1 = time.perf_counter()
    print(f"  BUILD, warm: export + restore + {unit} base/patched  {w1 - w0:5.2f} s wall  "
          f"({check.base}/{check.patched})")


def main() -> None:
    refs = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="bench-build-") as tmp:
        scratch = Path(tmp)
        if os.environ.get("XEN_GIT"):
            source = open_tree(os.environ["XEN_GIT"], cache_root(scratch / "trees"))
            refs = refs or ["stable-4.11", "stable-4.14", "stable-4.17", "master"]
        else:
            from verifier.debian import import_debian

            test_cache = cache_root(os.environ.get("XEN_VERIFY_TEST_CACHE")
                                    or Path.home() / ".cache" / "xen-verify-tests")
            source = import_debian("bookworm", test_cache)
            refs = refs or [source.default_ref]
        for ref in refs:
            bench(source, ref, scratch)
            for d in scratch.glob("cold-*"):
                shutil.rmtree(d, ignore_errors=True)
            for d in [*scratch.glob("warm-*"), *scratch.glob("patched-*")]:
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
