"""Refs in parallel: one process per ref, at most ``jobs`` at a time.

Processes rather than threads: a ref's work is partly Python (the reference model, the
scenario drivers) and a process per ref shares no module state with the others. Each
ref's checkout, harness builds and harness runs happen in its process; the cache is
safe for that (worktrees live in per-process folders, harness builds are renamed into
place). Progress and results come back on one queue, so each result is reported as it
completes and the runs are still returned in the order given.

Ctrl-C or SIGTERM: the parent stops the running refs with SIGTERM; each removes its
worktree on the way out (as a serial run does), and the parent re-raises
KeyboardInterrupt once they have all gone.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from verifier.model import PatchSeries, RunResult, TreeSource

Progress = Callable[[str], None]
_busy = False  # in a child: a ref is being verified (SIGTERM then unwinds it)


def _on_sigterm(signum: int, frame: Any) -> None:
    if _busy:
        raise KeyboardInterrupt
    os._exit(130)


def _child(queue: Any, n: int, total: int, series: PatchSeries, source: TreeSource, ref: str,
           cache: Path, checks: bool, report_progress: bool, exhaustive: bool,
           share: int = 1, jobs: int = 1) -> None:
    global _busy
    from verifier import tree
    from verifier.build import set_jobs
    from verifier.pipeline import verify_ref

    tree.forget_parked()  # the parent's parked worktrees are the parent's, not to be shared
    set_jobs(share, total=jobs)  # this ref's part of -j: the others running get theirs

    # The terminal's Ctrl-C reaches every process of the group: the parent decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    _busy = True
    try:
        say = (lambda msg: queue.put(("progress", n, msg))) if report_progress else None
        result = verify_ref(series, source, ref, cache, checks=checks, progress=say,
                            exhaustive=exhaustive)
        queue.put(("done", n, result))
    except KeyboardInterrupt:
        queue.put(("interrupted", n, None))
    except BaseException as e:  # handed to the parent, which raises it as a serial run would
        try:
            queue.put(("error", n, e))
        except Exception:  # an exception that does not pickle: its text will do
            queue.put(("error", n, RuntimeError(f"{type(e).__name__}: {e}")))
    finally:
        _busy = False
        tree.release_parked()  # a forked child ends without running atexit handlers


def verify_parallel(series: PatchSeries, todo: list[tuple[TreeSource, str]], cache: Path, *,
                    checks: bool, progress: Progress | None, jobs: int,
                    exhaustive: bool = False) -> list[RunResult]:
    from verifier import scratch
    from verifier.pipeline import done_line

    # made here, so the children share it and this process removes it at exit
    scratch.untrusted_cache(cache)
    ctx = multiprocessing.get_context("fork")  # the children need no re-import; Linux only
    queue = ctx.Queue()
    total = len(todo)
    results: dict[int, RunResult] = {}
    running: dict[int, Any] = {}
    started: dict[int, float] = {}
    pending = list(range(1, total + 1))

    def say(n: int, msg: str) -> None:
        if progress:
            progress(f"[{n}/{total} {time.monotonic() - started[n]:5.1f}s] {msg}")

    try:
        while pending or running:
            while pending and len(running) < jobs:
                n = pending.pop(0)
                source, ref = todo[n - 1]
                started[n] = time.monotonic()
                # the cores a ref's lifting may use: -j over the refs still to finish
                # (N x N lifts never run at once; the tree's make takes the whole -j)
                share = max(1, jobs // min(jobs, len(pending) + len(running) + 1))
                p = ctx.Process(target=_child, name=f"xen-verify {ref}", daemon=False,
                                args=(queue, n, total, series, source, ref, cache, checks,
                                      progress is not None, exhaustive, share, jobs))
                p.start()
                running[n] = p
            kind, n, value = queue.get()
            if kind == "progress":
                say(n, value)
                continue
            running.pop(n).join()
            if kind == "done":
                results[n] = value
                say(n, f"{value.ref}: {done_line(value, time.monotonic() - started[n])}")
            elif kind == "error":
                raise value
            else:
                raise KeyboardInterrupt
    except BaseException:
        _stop(running)
        raise
    finally:
        queue.close()
    return [results[n] for n in range(1, total + 1)]


def _stop(running: dict[int, Any]) -> None:
    """SIGTERM every running ref and wait for it to clean up its worktree."""
    for p in running.values():
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 60
    for p in running.values():
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():  # stuck: nothing more can be done for its worktree
            p.kill()
            p.join()


__all__ = ["verify_parallel"]
