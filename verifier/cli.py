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

    patch_help = ("diff, format-patch file, mbox series, saved patchwork page, git:REV, "
                  "or - for standard input")
    c = sub.add_parser("check", help="apply a patch to each ref, run the checks, report")
    c.add_argument("patches", nargs="+", metavar="PATCH", help=patch_help)
    trees(c)
    c.add_argument("--report-dir", metavar="DIR",
                   help="write report.json, report.md, report.html, junit.xml")
    c.add_argument("--markdown", action="store_true", help="print report.md to stdout")
    c.add_argument("--no-checks", action="store_true", help="only apply; run no check pack")
    c.add_argument("--exhaustive", action="store_true",
                   help="check packs' bounded exhaustive mode: every order of a few "
                        "operations at every preemption point, larger domains (slower)")
    c.add_argument("-j", "--jobs", type=_jobs, default=os.cpu_count() or 1, metavar="N",
                   help="refs checked at once (default: the number of cores)")

    pl = sub.add_parser("plan", help="write a GitLab CI child pipeline: a job per ref, "
                                     "then one that merges their reports")
    pl.add_argument("patches", nargs="+", metavar="PATCH", help="as for check (files, git:REV)")
    trees(pl)
    pl.add_argument("--gitlab", required=True, metavar="FILE",
                    help="the child pipeline's YAML to write (- for standard output)")
    pl.add_argument("--no-checks", action="store_true", help="jobs only apply the patch")
    pl.add_argument("--xen-verify", default="xen-verify", metavar="CMD",
                    help="how the jobs run xen-verify (default: xen-verify)")
    pl.add_argument("--artifacts-from", metavar="JOB",
                    help="the parent pipeline's job whose artifacts hold the patch files")

    m = sub.add_parser("merge", help="merge per-ref report.json files into one report")
    m.add_argument("dirs", nargs="+", metavar="DIR", help="a report directory or report.json")
    m.add_argument("--report-dir", metavar="DIR",
                   help="write the merged report.json, report.md, report.html, junit.xml")
    m.add_argument("--markdown", action="store_true", help="print report.md to stdout")
    m.add_argument("-q", "--quiet", action="store_true", help="no progress output")

    h = sub.add_parser("harness", help="write a ref's generated harness sources and build script")
    h.add_argument("patches", nargs="*", metavar="PATCH", help="patch to apply first (optional)")
    trees(h)
    h.add_argument("--out", required=True, metavar="DIR", help="where to write the harness")
    h.add_argument("--mutate", metavar="NAME",
                   help="a buggy variant of the tree's code (leak-alloc-lock, no-preempt, "
                        "own-domain, pv32-walk, drop-page, count-partial, positive-success)")
    return p


def _jobs(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise VerifyError(f"-j {text}: give a number of refs to check at once (1 or more)")
    return n


def _writable_dir(path: str, option: str = "--report-dir") -> Path:
    """Fail before any work when the reports could not be written at the end."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VerifyError(f"{option} {path}: not a directory")
    probe = p
    while not probe.exists():  # the nearest existing parent must let us create it
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise VerifyError(f"{option} {path}: not writable ({probe} does not let this user "
                          "write)")
    return p


def _stdin_patches(patches: list[str]) -> list[str]:
    """``-`` reads the patch from standard input (once) into a file that lives for the run."""
    if "-" not in patches:
        return patches
    if patches.count("-") > 1:
        raise VerifyError("-: standard input can be read once only")
    import atexit
    import tempfile

    data = sys.stdin.buffer.read()
    fd, name = tempfile.mkstemp(prefix="xen-verify-stdin-", suffix=".patch")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    atexit.register(lambda: os.path.exists(name) and os.unlink(name))
    _STDIN_NAMES[name] = "-"
    return [name if p == "-" else p for p in patches]


_STDIN_NAMES: dict[str, str] = {}  # temporary file -> "-" (how the user gave it)


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
    from verifier.pipeline import open_source, verify
    from verifier.tree import cache_root

    progress = _progress(args.quiet)
    if not args.no_checks:
        _need_sandbox(args, progress)
    cache = cache_root(args.cache)
    reqs = _trees(args)
    if args.report_dir:
        _writable_dir(args.report_dir)
    if any(p.startswith("git:") for p in args.patches) and reqs[0].kind != "repo":
        raise VerifyError("git:REV names a commit of a repository: give it with --repo first")
    patches = _stdin_patches(args.patches)
    sources = [(open_source(r, cache, progress), r.refs) for r in reqs]
    first_git = sources[0][0].git_dir
    try:
        series = _as_given(load_series(patches, first_git))
    except VerifyError as e:  # name standard input as the user did, not its temporary file
        msg = str(e)
        for tmp, given in _STDIN_NAMES.items():
            msg = msg.replace(tmp, given)
        raise VerifyError(msg) from None
    command = "xen-verify " + " ".join(shlex.quote(a) for a in args.argv)
    report = verify(series, sources, cache, command=command, checks=not args.no_checks,
                    progress=progress, jobs=args.jobs, exhaustive=args.exhaustive)
    return _output(report, args, progress)


def _as_given(series):  # type: ignore[no-untyped-def]
    """A patch read from standard input is reported as ``-``, not as its temporary file."""
    import dataclasses

    if not _STDIN_NAMES:
        return series

    def fix(p):  # type: ignore[no-untyped-def]
        src = p.meta.source
        for tmp, given in _STDIN_NAMES.items():
            if src == tmp or src.startswith(tmp + "#"):
                src = given + src[len(tmp):]
        return dataclasses.replace(p, meta=dataclasses.replace(p.meta, source=src))

    return dataclasses.replace(series, patches=tuple(fix(p) for p in series.patches))


def _output(report, args: argparse.Namespace, progress) -> int:  # type: ignore[no-untyped-def]
    from verifier.pipeline import exit_status
    from verifier.report import print_summary, render_markdown, write_reports

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


def _plan(args: argparse.Namespace) -> int:
    from verifier.gitlab import child_pipeline

    reqs = getattr(args, "trees", None) or []
    if not reqs or any(r.kind != "repo" for r in reqs):
        raise VerifyError("plan: give the tree with --repo (a path or URL the CI jobs reach)")
    if "-" in args.patches:
        raise VerifyError("plan: the jobs read the patch from a file: give its path, not -")
    text = child_pipeline(args.patches, reqs, xen_verify=args.xen_verify,
                          checks=not args.no_checks, artifacts_from=args.artifacts_from)
    if args.gitlab == "-":
        sys.stdout.write(text)
        return EXIT_OK
    out = Path(args.gitlab)
    if out.parent != Path("") and not out.parent.is_dir():
        raise VerifyError(f"--gitlab {args.gitlab}: no such directory {out.parent}")
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as e:
        raise VerifyError(f"--gitlab {args.gitlab}: cannot write: {e.strerror or e}") from None
    jobs = sum(len(r.refs) or 1 for r in reqs)
    print(f"wrote {out}: {jobs} check job(s) and a merge job")
    return EXIT_OK


def _merge(args: argparse.Namespace) -> int:
    from verifier.merge import load_report, merge_reports

    progress = _progress(args.quiet)
    if args.report_dir:
        _writable_dir(args.report_dir)
    command = "xen-verify " + " ".join(shlex.quote(a) for a in args.argv)
    report = merge_reports([(d, load_report(Path(d))) for d in args.dirs], command=command)
    return _output(report, args, progress)


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
            if result.status is ApplyStatus.MISSING_PREREQUISITE or (
                    result.patched_commit is None
                    and result.status is not ApplyStatus.ALREADY_APPLIED):
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
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for the report's command
        commands = {"check": _check, "plan": _plan, "merge": _merge, "harness": _harness}
        return commands[args.command](args)
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
