"""Render the harness (Jinja2 templates + the tree's verbatim text) and build it with gcc.

``generate`` produces three files: ``env.h`` (the instrumented environment),
``pieces.c`` (the tree's constants and functions, with ``#line`` provenance, plus
auto-stubs) and ``driver.c`` (the line protocol the target speaks). Free identifiers
are found with pycparser (``extract.analyse``): a tree macro is added to the constant
closure, a callee nobody provides becomes an auto-stub, anything else is an error.
``build`` compiles with ASan/UBSan into an executable cached by content hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from verifier import extract, sandbox
from verifier.extract import Extracted
from verifier.model import VerifyError
from verifier.target import HarnessError, SandboxViolation

# Package data: in the source tree verifier/harness_templates is a link to the top-level
# harness_templates/, in an installed package a copy of it.
TEMPLATES = Path(__file__).resolve().parent / "harness_templates"
CFLAGS = (
    "-std=gnu11",
    "-g",
    "-O1",
    "-fsanitize=address,undefined",
    "-fno-sanitize-recover=undefined",
    "-fno-omit-frame-pointer",
    "-Wall",
    "-Wno-unused-variable",
    "-Wno-unused-but-set-variable",
    "-Wno-unused-function",
    "-Werror=implicit-function-declaration",
)
MAX_PAGES = 16384  # P4 sizes domains up to 16384 pages (64 MiB of simulated memory)

# Constants every harness needs from the tree (the rest follow from analysis).
BASE_CONSTANTS = [
    "PGT_type_mask",
    "PGT_l4_page_table",
    "PGT_validated",
    "PGT_partial",
    "PGT_locked",
    "PGT_pinned",
    "PGT_count_mask",
    "RO_MPT_VIRT_START",
    "l4_table_offset",
    "VMASST_TYPE_m2p_strict",
    "ERESTART",
    "EINTR",
]
# Mutations for the check pack's proof that its checks have teeth.
# Buggy variants of the fix, made at run time from the tree's own fixup text (so no Xen
# text is kept here): each pattern is replaced on its own line, keeping line numbers,
# and a mutation that does not match a tree is refused rather than silently inert.
FIXUP_MUTATIONS: dict[str, tuple[str, str]] = {
    # the -ERESTART path returns with page_alloc_lock still held (P3: lock balance)
    "leak-alloc-lock": (r"^(\s*)(?:spin_unlock_recursive|rspin_unlock)\(&d->page_alloc_lock\);",
                        r"\1/* MUTATION leak-alloc-lock */"),
    # the walk never yields to a pending preemption (P3: bounded batches)
    "no-preempt": (r"hypercall_preempt_check\(\)", "0 /* MUTATION no-preempt */"),
    # a domain setting its own context walks too (P8: scope)
    "own-domain": (r"d != current->domain &&", "/* MUTATION own-domain */"),
    # a 32-bit PV domain's context walks too (P8: scope)
    "pv32-walk": (r"!is_pv_32bit_domain\(d\) &&|\bis_pv_64bit_domain\(d\) &&",
                  "/* MUTATION pv32-walk */"),
    # a page taken off d->page_list is not put back (P3: page-list integrity)
    "drop-page": (r"^(\s*)page_list_add_tail\(page, &d->page_list\);",
                  r"\1/* MUTATION drop-page */"),
}
_L4_COUNTER_INC = re.compile(r"atomic_inc\(\s*&d->arch\.[\w.]*nr_l4_pages\s*\)")


def _count_partial(text: str) -> tuple[str, int]:
    """Every return of the L4 validator also counts a preempted (-ERESTART) validation."""
    inc = _L4_COUNTER_INC.search(text)
    if inc is None:
        return text, 0
    return re.subn(r"^(\s*)return rc;", rf"\1if ( rc == -ERESTART ) {inc.group(0)}; return rc;",
                   text, flags=re.MULTILINE)


# Buggy variants of the L4 validator (P6: its contract and the counter), made the same way.
VALIDATOR_MUTATIONS: dict[str, Callable[[str], tuple[str, int]]] = {
    "count-partial": _count_partial,
    # success is reported as 1 instead of 0
    "positive-success": lambda text: re.subn(r"^(\s*)return rc;", r"\1return rc ? rc : 1;",
                                             text, flags=re.MULTILINE),
}
# no-fixup: the restore walk's fill_ro_mpt fills nothing (the pack's mutation proof)
MUTATIONS = {None, "no-fixup", *FIXUP_MUTATIONS, *VALIDATOR_MUTATIONS}
OPTIONAL_CONSTANTS = {"VMASST_TYPE_m2p_strict"}  # absent before 4.6
# gcc in the sandbox: a hostile unit (an #include of a device, a macro bomb) ends here.
GCC_LIMITS = sandbox.Limits(cpu_s=120, mem_bytes=3 << 29, nproc=32, fsize_bytes=512 << 20)
GCC_TIMEOUT = 180.0
GUARD_FILE = "sandbox_guard.c"
# An #include in the tree's text that names anything but a header beside it: an absolute
# path, a parent directory, a device (gcc would read /dev/zero until memory runs out).
_HOSTILE_INCLUDE = re.compile(
    r'^[ \t]*#[ \t]*(?:include|include_next|import|embed)\b[ \t]*[<"]?([^>"\n]*)', re.M
)
# Names the environment header provides (never taken from the tree).
ENV_NAMES_SKIP = {"ASSERT", "BUG_ON", "BUG", "NULL", "true", "false", "bool", "current"}


@dataclass
class HarnessSources:
    files: dict[str, str]
    label: str
    pieces: dict[str, Extracted | None]
    stubs: list[str] = field(default_factory=list)
    macros_added: list[str] = field(default_factory=list)
    normalisations: dict[str, int] = field(default_factory=dict)
    real_pin: bool = False  # the tree's L4 validator/devalidator/slot initialiser compiled in

    @property
    def key(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + self.files[name].encode() + b"\0")
        h.update(" ".join(CFLAGS).encode())
        return h.hexdigest()[:20]


def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _fix_self_lines(text: str) -> str:
    out = []
    for i, line in enumerate(text.split("\n"), start=1):
        out.append(line.replace("@@SELF@@", str(i + 1)))
    return "\n".join(out)


def _nparams(piece: Extracted | None) -> int:
    if piece is None:
        return 0
    head = piece.text.split("{", 1)[0]
    return head[head.index("(") :].count(",") + 1


def _fill_void(piece: Extracted | None) -> bool:
    if piece is None:
        return False
    head = piece.text.split("fill_ro_mpt", 1)[0]
    return head.strip().split()[-1:] == ["void"]


def _mutated(fixup: Extracted | None, name: str) -> Extracted:
    """The fixup statement with one of FIXUP_MUTATIONS applied (refused if it does not match)."""
    if fixup is None or not extract.has_walk(fixup):
        raise HarnessError(f"mutation {name}: this tree has no restore walk to mutate")
    pattern, repl = FIXUP_MUTATIONS[name]
    text, n = re.subn(pattern, repl, fixup.text, flags=re.MULTILINE)
    if n == 0:
        raise HarnessError(f"mutation {name} does not match {fixup.location}")
    return dataclasses.replace(fixup, text=text, notes=(*fixup.notes, f"mutation {name}"))


def render(
    pieces: dict[str, Extracted | None],
    constants_text: str,
    label: str,
    stubs: list[str] | None = None,
    commit: str | None = None,
    mutate: str | None = None,
    real_pin: bool = False,
) -> dict[str, str]:
    if mutate not in MUTATIONS:
        known = sorted(m for m in MUTATIONS if m)
        raise HarnessError(f"unknown mutation {mutate!r} (known: {known})")
    env = _env()
    fixup = pieces.get("restore_fixup")
    if mutate in FIXUP_MUTATIONS:
        fixup = _mutated(fixup, mutate)
    validate = pieces.get("l4_validate") if real_pin else None
    if mutate in VALIDATOR_MUTATIONS:
        if validate is None:
            raise HarnessError(f"mutation {mutate}: no real L4 validator in this harness")
        text, n = VALIDATOR_MUTATIONS[mutate](validate.text)
        if n == 0:
            raise HarnessError(f"mutation {mutate} does not match {validate.location}")
        validate = dataclasses.replace(validate, text=text,
                                       notes=(*validate.notes, f"mutation {mutate}"))
    fixup_locals: list[str] = []
    if fixup is not None:
        for decl in fixup.locals:
            fixup_locals.extend(
                n.strip("*") for n in extract._IDENT.findall(decl.split("[")[0])[-1:]
            )
    all_text = "\n".join(p.text for p in pieces.values() if p is not None)
    ctx = dict(
        tree_label=label,
        max_pages=MAX_PAGES,
        constants=constants_text,
        stubs=sorted(stubs or []),
        page_lock=pieces.get("page_lock"),
        page_unlock=pieces.get("page_unlock"),
        fill=pieces.get("fill_ro_mpt"),
        fill_void=_fill_void(pieces.get("fill_ro_mpt")),
        fixup=fixup,
        fixup_locals=fixup_locals,
        fixup_walk=extract.has_walk(fixup),
        has_counter="nr_l4_pages" in all_text,
        commit_note=f", commit {commit}" if commit else "",
        mutate=mutate,
        validate=validate,
        devalidate=pieces.get("l4_devalidate"),
        slot_init=pieces.get("l4_slot_init"),
        validate_preemptible=_nparams(pieces.get("l4_validate")) > 1,
        devalidate_preemptible=_nparams(pieces.get("l4_devalidate")) > 1,
    )
    return {
        "env.h": env.get_template("env.h.j2").render(**ctx),
        "pieces.c": _fix_self_lines(env.get_template("pieces.c.j2").render(**ctx)),
        "driver.c": env.get_template("driver.c.j2").render(**ctx),
        GUARD_FILE: sandbox.GUARD_C,
    }


def refuse_hostile_includes(pieces: dict[str, Extracted | None]) -> None:
    """SandboxViolation for an ``#include`` in the tree's text that reaches outside it.

    The extracted pieces are function bodies and statements: an include there is the
    patch's doing, and gcc would read whatever it names. Checked before any gcc runs.
    """
    for piece in pieces.values():
        if piece is None:
            continue
        for m in _HOSTILE_INCLUDE.finditer(piece.text):
            target = m.group(1).strip()
            if target.startswith("/") or ".." in target or not target:
                line = piece.first_line + piece.text.count("\n", 0, m.start())
                what = f"#include {target or '(a macro)'}"
                raise SandboxViolation(
                    f"harness source tried to {what} ({piece.file}:{line}): blocked",
                    location=f"{piece.file}:{line}", attempt=what, pieces=pieces,
                )


def generate(
    tree: Path | None,
    pieces: dict[str, Extracted | None] | None = None,
    *,
    commit: str | None = None,
    label: str = "",
    constants_text: str | None = None,
    mutate: str | None = None,
    real_pin: bool = False,
) -> HarnessSources:
    """Harness sources for ``tree`` (roles found there unless ``pieces`` is given).

    ``constants_text`` replaces the tree's constants (used by tests with their own
    tiny C fixtures and no tree).
    """
    if pieces is None:
        if tree is None:
            raise HarnessError("no tree and no pieces: nothing to build a harness from")
        try:
            pieces = extract.find_roles(Path(tree), commit)
        except HarnessError:
            raise
        except VerifyError as e:
            raise HarnessError(f"no harness for {tree}: {e}") from None
    refuse_hostile_includes(pieces)
    label = label or (str(tree) if tree is not None else "fixture")
    names = list(BASE_CONSTANTS) + (["ROOT_PAGETABLE_PV_XEN_SLOTS"] if real_pin else [])
    stubs: list[str] = []
    added: list[str] = []
    norms: dict[str, int] = {}
    import tempfile

    env_names = set(re.findall(r"^#define (\w+)", (TEMPLATES / "env.h.j2").read_text(), re.M))
    sources = tuple(sorted({p.file for p in pieces.values() if p is not None}))
    for _round in range(6):
        if constants_text is not None:
            consts = constants_text
        else:
            c = extract.constants(
                Path(tree), names, env_names, sources  # type: ignore[arg-type]
            )
            if any(n in c.missing for n in BASE_CONSTANTS if n not in OPTIONAL_CONSTANTS):
                missing = [n for n in BASE_CONSTANTS if n in c.missing]
                raise HarnessError(f"{tree}: constants not found in the tree's headers: {missing}")
            consts = c.render(commit)
        if real_pin and any(
            pieces.get(r) is None for r in ("l4_validate", "l4_devalidate", "l4_slot_init")
        ):
            raise HarnessError("real_pin: the tree lacks one of the L4 validation roles")
        files = render(pieces, consts, label, stubs, commit, mutate, real_pin)
        with tempfile.TemporaryDirectory(prefix="xv-an-") as td:
            (Path(td) / "env.h").write_text(files["env.h"])
            try:
                pre = extract.preprocess(files["pieces.c"], Path(td))
                analysis = extract.analyse(pre)
            except Exception as e:
                # Let gcc say where (it reports against the tree's file:line via #line).
                raise HarnessError(
                    _gcc_syntax_error(files, Path(td))
                    or f"analysis of the harness unit failed: {e}"
                ) from None
        norms = analysis.normalisations
        index: dict = {}
        if constants_text is None:
            index = dict(extract._define_index(Path(tree)))
            for rel in sources:
                index.update({k: v for k, v in extract.file_defines(Path(tree), rel).items()
                              if k not in index})
        new_macros = sorted(
            n for n in analysis.free if n in index and n not in names and n not in ENV_NAMES_SKIP
        )
        new_stubs = sorted(
            n for n in analysis.called if n not in index and n not in stubs
            and not n.startswith("__")
        )
        unknown = sorted(
            n for n in analysis.free - analysis.called
            if n not in index and not n.startswith("__")
        )
        if unknown:
            raise HarnessError(
                "identifiers neither provided by the environment, the tree's headers nor "
                f"a callable stub: {', '.join(unknown)}"
            )
        if not new_macros and not new_stubs:
            return HarnessSources(files, label, pieces, stubs, added, norms, real_pin)
        names.extend(new_macros)
        added.extend(new_macros)
        stubs.extend(new_stubs)
    raise HarnessError("free-identifier analysis did not settle after 6 rounds")


def run_gcc(argv: list[str], where: Path, *, stdin: bytes | None = None) -> sandbox.Result:
    """gcc on the harness unit in the sandbox: ``where`` is the only place it sees or writes."""
    gcc = shutil.which(argv[0])
    if gcc is None:
        raise HarnessError("gcc not found: the harness needs gcc")
    res = sandbox.run([gcc, *argv[1:]], cwd=where, writable=where, limits=GCC_LIMITS,
                      timeout_s=GCC_TIMEOUT, stdin=stdin)
    if res.timed_out:
        raise HarnessError(f"gcc did not finish within {GCC_TIMEOUT:g}s on the harness unit")
    return res


def _gcc_syntax_error(files: dict[str, str], where: Path) -> str | None:
    """gcc's first error for the unit, or None when it compiles."""
    (where / "pieces.c").write_text(files["pieces.c"])
    proc = run_gcc(["gcc", "-std=gnu11", "-fsyntax-only",
                    "-Werror=implicit-function-declaration", "pieces.c"], where)
    if proc.returncode == 0:
        return None
    stderr = proc.stderr.decode(errors="replace")
    # An identifier not yet declared is what the closure rounds add: not the reason.
    errors = [ln for ln in stderr.splitlines() if ": error:" in ln
              and "undeclared" not in ln and "implicit declaration" not in ln][:3]
    if not errors:
        return None if proc.returncode == 1 else "harness does not compile: " + _limit_hint(proc)
    return "harness does not compile: " + " | ".join(errors)


def _limit_hint(res: sandbox.Result) -> str:
    if res.returncode is not None and res.returncode > 128:
        return f"gcc was stopped by the sandbox's limits (status {res.returncode})"
    tail = res.stderr.decode(errors="replace").strip().splitlines()[-1:]
    return tail[0] if tail else f"gcc exit status {res.returncode}"


def fixture_pieces(*paths: Path, role: str = "fill_ro_mpt") -> dict[str, Extracted | None]:
    """Roles from small C files written for tests (not Xen text): one function each."""
    pieces: dict[str, Extracted | None] = {r: None for r in extract.ROLES}
    pieces["page_unlock"] = None
    for path in paths:
        text = Path(path).read_text()
        lines = text.rstrip("\n").split("\n")
        first = next(i for i, ln in enumerate(lines, 1) if ln and not ln.startswith(("/*", " *")))
        name = role
        pieces[role] = Extracted(
            role=role, name=name, file=str(path), first_line=first, last_line=len(lines),
            text="\n".join(lines[first - 1 :]), kind="function",
        )
    return pieces


def gcc_command(out: str = "driver") -> list[str]:
    return ["gcc", *CFLAGS, "-o", out, "pieces.c", "driver.c", GUARD_FILE]


def write_sources(src: HarnessSources, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in src.files.items():
        (out_dir / name).write_text(text)
    script = out_dir / "build.sh"
    script.write_text(
        "#!/bin/sh\n# Rebuild the xen-verify harness for " + src.label + "\nset -e\n"
        'cd "$(dirname "$0")"\n' + shlex.join(gcc_command()) + "\n"
    )
    script.chmod(0o755)
    return out_dir


@dataclass
class Built:
    exe: Path
    sources: HarnessSources
    seconds: float
    cached: bool


def build(src: HarnessSources, cache_dir: Path) -> Built:
    """Compile ``src`` (or reuse the cached executable with the same content hash)."""
    d = Path(cache_dir) / f"harness-{src.key}"
    exe = d / "driver"
    if exe.exists():
        return Built(exe, src, 0.0, True)
    # A folder of its own per build: refs built at once (-j) by processes or threads
    # never share one, and the first complete build of a key is renamed into place.
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{src.key}-{os.getpid()}-", dir=cache_dir))
    write_sources(src, tmp)
    refuse_hostile_includes(src.pieces)
    t0 = time.monotonic()
    try:
        proc = run_gcc(gcc_command(), tmp)
    except HarnessError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace")
        errors = [ln for ln in stderr.splitlines() if "error" in ln][:5]
        shutil.rmtree(tmp, ignore_errors=True)
        raise HarnessError(
            "harness build failed: " + (" | ".join(errors) or _limit_hint(proc))
        )
    seconds = time.monotonic() - t0
    try:
        tmp.rename(d)
    except OSError:  # another build of the same key got there first: use it, drop ours
        if not exe.exists():  # a damaged entry: run this build from where it is
            return Built(tmp / "driver", src, seconds, False)
        shutil.rmtree(tmp, ignore_errors=True)
    return Built(exe, src, seconds, False)


def tree_sources(tree: Path, *, commit: str | None, label: str,
                 mutate: str | None = None) -> HarnessSources:
    """The harness the check pack runs on ``tree``: its own validator, every role real.

    The checks and ``xen-verify harness`` both come here, so what a reviewer rebuilds is
    byte for byte what the checks ran (same ``key``).
    """
    return generate(Path(tree), commit=commit, label=label, mutate=mutate, real_pin=True)


def tree_label(ref: str, commit: str, location: str, *, patched: bool) -> str:
    """How a harness names its tree: ``ref (sha) of repo[ with the patch]``."""
    return f"{ref} ({commit[:12]}) of {location}" + (" with the patch" if patched else "")


def provenance_commit(commit: str, *, patched: bool) -> str:
    """The commit a piece's text is from; a patched tree is its base plus the patch."""
    return commit[:12] + ("+patch" if patched else "")


def write_harness(
    tree: Path, out_dir: Path, commit: str | None = None, label: str = ""
) -> Path:
    """Write the generated sources and build.sh for ``tree`` into ``out_dir``.

    ``label`` names the tree in the files (``ref (sha) of repo``): ``tree`` may be a
    worktree that is gone by the time a reviewer reads them.
    """
    try:
        src = tree_sources(Path(tree), commit=commit, label=label)
    except SandboxViolation as e:
        raise HarnessError(str(e)) from None
    return write_sources(src, Path(out_dir))
