"""xen-verify command line: a thin layer over verifier.pipeline."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Any

from verifier import __version__
from verifier.model import ApplyStatus, VerifyError
from verifier.pipeline import TreeRequest

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Tree(argparse.Action):
    """--repo / --debian start a tree; each --ref after it belongs to it."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace,
                 value: Any, option: str | None = None) -> None:
        trees = getattr(ns, "trees", None) or []
        if option == "--ref":
            if not trees:
                raise VerifyError(f"--ref {value}: put it after the --repo or --debian it "
                                  "belongs to")
            trees[-1].refs.append(value)
        else:
            trees.append(TreeRequest("debian" if option == "--debian" else "repo", value))
        ns.trees = trees


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # one line, exit 2
        raise VerifyError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="xen-verify", description="Verify a Xen patch against real Xen trees.")
    p.add_argument("--version", action="version", version=f"xen-verify {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def trees(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--repo", action=_Tree, dest="trees", metavar="PATH|URL",
                        help="a Xen git repository (clone, bare mirror, or URL); repeatable")
        sp.add_argument("--debian", action=_Tree, dest="trees", metavar="SUITE",
                        help="Debian's Xen source package of SUITE (bookworm, bullseye, ...)")
        sp.add_argument("--ref", action=_Tree, dest="trees", metavar="REV",
                        help="branch, tag, sha or rev expression; applies to the tree before it")
        sp.add_argument("--cache", metavar="DIR",
                        help="cache directory (default $XEN_VERIFY_CACHE or "
                             "$XDG_CACHE_HOME/xen-verify)")
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress output")
        sp.add_argument("--no-sandbox", action="store_true",
                        help="where no sandbox (bubblewrap) can be had, run the patch's code "
                             "anyway, with resource limits only")

    c = sub.add_parser("check", help="apply a patch to each ref, run the checks, report")
    c.add_argument("patches", nargs="+", metavar="PATCH",
                   help="diff, format-patch file, mbox series, saved patchwork page, or git:REV")
    trees(c)
    c.add_argument("--report-dir", metavar="DIR", help="write report.json, report.md, junit.xml")
    c.add_argument("--markdown", action="store_true", help="print report.md to stdout")
    c.add_argument("--no-checks", action="store_true", help="only apply; run no check pack")
    c.add_argument("--exhaustive", action="store_true",
                   help="check packs' bounded exhaustive mode: every order of a few "
                        "operations at every preemption point, larger domains (slower)")

    h = sub.add_parser("harness", help="write a ref's generated harness sources and build script")
    h.add_argument("patches", nargs="*", metavar="PATCH", help="patch to apply first (optional)")
    trees(h)
    h.add_argument("--out", required=True, metavar="DIR", help="where to write the harness")
    h.add_argument("--mutate", metavar="NAME",
                   help="a buggy variant of the tree's code (leak-alloc-lock, no-preempt, "
                        "own-domain, pv32-walk, drop-page, count-partial, positive-success)")
    return p


def _progress(quiet: bool):  # type: ignore[no-untyped-def]
    if quiet:
        return None
    from rich.console import Console

    err = Console(stderr=True)

    def say(msg: str) -> None:
        from verifier.patch import printable

        err.print(f"xen-verify: {printable(msg)}", style="dim", highlight=False, markup=False,
                  soft_wrap=True)

    return say


def _need_sandbox(args: argparse.Namespace, progress: Any) -> None:
    """Refuse before anything runs when patch code would run unconfined (--no-sandbox)."""
    from verifier import sandbox

    sandbox.allow_unsandboxed(bool(args.no_sandbox))
    st = sandbox.require()
    if not st.available:
        print(f"xen-verify: warning: {st.note}", file=sys.stderr)


def _trees(args: argparse.Namespace) -> list[TreeRequest]:
    reqs: list[TreeRequest] = getattr(args, "trees", None) or []
    if not reqs:
        reqs = [TreeRequest("debian", "")]
    for r in reqs:
        if r.kind == "debian" and not r.spec:
            from verifier.debian import default_suite

            r.spec = default_suite()
    return reqs


def _check(args: argparse.Namespace) -> int:
    from verifier.patch import load_series
    from verifier.pipeline import exit_status, open_source, verify
    from verifier.report import print_summary, render_markdown, write_reports
    from verifier.tree import cache_root

    progress = _progress(args.quiet)
    if not args.no_checks:
        _need_sandbox(args, progress)
    cache = cache_root(args.cache)
    reqs = _trees(args)
    if args.report_dir and Path(args.report_dir).exists() and not Path(args.report_dir).is_dir():
        raise VerifyError(f"--report-dir {args.report_dir}: not a directory")
    if any(p.startswith("git:") for p in args.patches) and reqs[0].kind != "repo":
        raise VerifyError("git:REV names a commit of a repository: give it with --repo first")
    sources = [(open_source(r, cache, progress), r.refs) for r in reqs]
    first_git = sources[0][0].git_dir
    series = load_series(args.patches, first_git)
    command = "xen-verify " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = verify(series, sources, cache, command=command, checks=not args.no_checks,
                    progress=progress, exhaustive=args.exhaustive)
    if args.report_dir:
        for path in write_reports(report, Path(args.report_dir)):
            if progress:
                progress(f"wrote {path}")
    try:
        if args.markdown:
            from verifier.patch import printable

            print(printable(render_markdown(report)))
        else:
            print_summary(report)
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader left; the verdict still decides the status
        _drop_stdout()
    except OSError as e:  # stdout on a full device, a closed terminal
        _drop_stdout()
        raise VerifyError(f"cannot write to standard output: {e.strerror or e}") from None
    return exit_status(report)


def _drop_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _harness(args: argparse.Namespace) -> int:
    from verifier.apply import apply_series
    from verifier.packs import all_packs
    from verifier.patch import load_series
    from verifier.pipeline import open_source
    from verifier.tree import cache_root, checkout

    progress = _progress(args.quiet)
    _need_sandbox(args, progress)
    cache = cache_root(args.cache)
    reqs = _trees(args)
    req = reqs[0]
    source = open_source(req, cache, progress)
    ref = (req.refs or [source.default_ref])[0]
    packs = [p for p in all_packs() if p.on_harness is not None]
    if not packs:
        raise VerifyError("no check pack writes a harness")
    with checkout(source, ref, cache) as co:
        patched = False
        if args.patches:
            series = load_series(args.patches, source.git_dir)
            result = apply_series(series, co, progress)
            if progress:
                progress(f"{ref}: {result.detail}")
            if result.patched_commit is None and result.status is not ApplyStatus.ALREADY_APPLIED:
                raise VerifyError(f"{ref}: no patched tree to build a harness from: "
                                  f"{result.detail}")
            patched = result.status is not ApplyStatus.ALREADY_APPLIED
        if progress:
            progress(f"{ref}: writing the harness and replaying the checks")
        out, key, replays = packs[0].on_harness(co, Path(args.out), patched=patched,
                                                cache=cache, mutate=args.mutate)
    print(f"harness {key} for {ref} ({co.commit[:12]}) written to {out}: `make -C {out}` "
          f"builds it, `make -C {out} run` replays {len(replays)} failing trace(s)")
    return EXIT_OK


_MACHINE_ERRORS = ("No space left on device", "Read-only file system", "Permission denied",
                   "Disk quota exceeded")


def _machine_refused(e: BaseException) -> str | None:
    """The line of a failed command (git) that says the machine refused, if one does."""
    text = " ".join(str(getattr(e, "stderr", "") or e).split())
    for what in _MACHINE_ERRORS:
        if what in text:
            cmd = getattr(e, "command", None)
            name = " ".join(cmd[:3]) if isinstance(cmd, list) else type(e).__name__
            return _one_line(f"{what.lower()} ({name}: {text[-300:]})")
    return None


def _one_line(text: str) -> str:
    """An error message as one printable line (it may quote a patch)."""
    from verifier.patch import printable

    return printable(" ".join(text.split("\n")))[:2000]


def main(argv: list[str] | None = None) -> int:
    # SIGTERM takes the same clean-up path as Ctrl-C (worktrees removed, no partial files).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "check":
            return _check(args)
        return _harness(args)
    except VerifyError as e:
        print(f"xen-verify: error: {_one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # the machine refused: a full disk, an unwritable place
        _drop_stdout()
        where = f": {e.filename}" if e.filename else ""
        print(f"xen-verify: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("xen-verify: interrupted; worktrees removed", file=sys.stderr)
        return 130
    except Exception as e:  # a bug in the tool: one line, the traceback on request
        if os.environ.get("XEN_VERIFY_DEBUG"):
            raise
        machine = _machine_refused(e)
        if machine:  # git (or another tool) hit a full disk or an unwritable place
            print(f"xen-verify: error: {machine}", file=sys.stderr)
            return EXIT_USAGE
        print(f"xen-verify: internal error: {type(e).__name__}: {_one_line(str(e))} "
              "(set XEN_VERIFY_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
