"""Lift one translation unit of a prepared tree into a userspace harness.

The whole unit is compiled with the tree's own command (its real headers, never
copies), minus the kernel-only code generation flags, plus ASan/UBSan and an overlay
include directory first on the path. The overlay's shadow headers wrap the tree's own
(``#include_next``) and change only what cannot run in ring 3 or must be seen: the
PML4 slot macro (frame table and directmap land in harness arenas), the static inline
rwlock / RCU / domain-reference fast paths (recorded). Everything the unit leaves
undefined becomes a generated stub (``stubs.py``); the runtime
(``harness_templates/generic/runtime.c.j2``) traps BUG/ASSERT frames and privileged
instructions and runs each path in a forked child.

The result is cached by content under ``<cache>/generic/``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from verifier import sandbox
from verifier.generic import dwarf, resources, stubs

# verifier/harness_templates: the top-level folder, in the wheel too
TEMPLATES = Path(__file__).resolve().parent.parent / "harness_templates" / "generic"
OVERLAY = TEMPLATES / "overlay"
VERSION = "lift-5"

# Kernel-only code generation and build-system flags dropped in userspace.
_DROP_PREFIX = ("-mindirect-branch", "-mfunction-return", "-fcf-protection", "-mcmodel=",
                "-Werror", "-Wp,-M", "-MF", "-MT", "-MQ", "-fzero-call-used-regs",
                "-mharden-sls", "-fsanitize", "-fprofile", "-fstack-protector",
                "-mretpoline", "-fno-jump-tables", "-mpreferred-stack-boundary",
                "-fcoverage", "-pg", "-mrecord-mcount", "-mfentry", "-falign-functions",
                "-mno-red-zone", "-ffixed-")
_DROP_EXACT = {"-c", "-MMD", "-MD", "-MP", "-Werror", "-pipe", "-fpic", "-fPIC", "-fpie",
               "-fPIE", "-g", "-gdwarf-4", "-gdwarf-2"}
_WITH_VALUE = {"-o", "-MF", "-MT", "-MQ"}
SAN = ("-fsanitize=address,undefined", "-fno-sanitize=alignment,vptr",
       "-fno-omit-frame-pointer")
# String functions whose Xen and libc versions agree: the unit links to libc's.
LIBC_OK = frozenset(
    "memcpy memset memmove memcmp memchr strlen strnlen strcmp strncmp strcpy strncpy "
    "strchr strrchr strstr strcat strncat strcasecmp strncasecmp strspn strcspn "
    "strpbrk".split())


class LiftError(Exception):
    """The unit could not be lifted; the message says why (one line)."""


@dataclass
class Lifted:
    """A built harness for one unit: the executable and what the explorer needs."""

    source: str  # the unit, relative to the tree root ("xen/common/memory.c")
    exe: Path
    dir: Path
    types: dwarf.Types
    stubs: list[stubs.Stub]
    functions: list[str]  # unit functions the driver can call
    warn_rips: list[int] = field(default_factory=list)
    symbols: dict[str, int] = field(default_factory=dict)  # exe data/function addresses
    notes: list[str] = field(default_factory=list)
    entries: dict[str, str] = field(default_factory=dict)  # function -> symbol called

    def stub_index(self) -> dict[str, int]:
        return {s.name: i for i, s in enumerate(self.stubs)}


def userspace_argv(argv: tuple[str, ...] | list[str], overlay: Path, opt: str = "-O0",
                   coverage: bool = True, keep_inline: bool = False) -> list[str]:
    """The unit's compiler command for userspace: source and output removed."""
    out: list[str] = []
    skip = False
    seen_include = False
    for i, a in enumerate(argv):
        if i == 0:
            out.append("gcc")
            continue
        if skip:
            skip = False
            continue
        if a in _WITH_VALUE:
            skip = True
            continue
        if a in _DROP_EXACT or a.startswith(_DROP_PREFIX):
            continue
        if re.fullmatch(r"-O[0-9sgz]?", a):
            continue
        if a.endswith((".c", ".S")) and not a.startswith("-"):
            continue
        if a.startswith("-I") and not seen_include:
            out.append(f"-I{overlay}")
            seen_include = True
        out.append(a)
    if not seen_include:
        out.append(f"-I{overlay}")
    cov = ["-fsanitize-coverage=trace-pc"] if coverage else []
    keep = ["-fkeep-inline-functions"] if keep_inline else []
    return [*out, opt, "-g", "-w", "-fno-pic", *SAN, *cov, *keep]


def _run(cmd: list[str], cwd: Path, what: str, timeout: int = 300,
         box: tuple[tuple[Path, ...], Path] | None = None) -> str:
    """``cmd`` to completion; ``box`` = (read-only paths, the one writable directory):
    in the sandbox, for gcc on text a patch may have written."""
    try:
        if box is not None:
            p = sandbox.run_build_step(cmd, cwd=cwd, readable=box[0], writable=box[1],
                                       timeout_s=timeout, env={"LC_ALL": "C"},
                                       limits=sandbox.COMPILE_LIMITS)
        else:
            p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise LiftError(f"{what}: {e.filename} not found") from None
    except subprocess.TimeoutExpired:
        raise LiftError(f"{what}: timed out after {timeout}s") from None
    if p.returncode != 0:
        first = next((ln for ln in p.stderr.splitlines()
                      if re.search(r"error:|undefined reference|multiple definition", ln)
                      and "collect2" not in ln),
                     p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "failed")
        raise LiftError(f"{what}: {first.strip()[:300]}")
    return p.stdout


def _nm(path: Path, *flags: str) -> list[tuple[str, str]]:
    out = _run(["nm", *flags, str(path)], path.parent, "nm")
    rows = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 2:
            rows.append((parts[0], parts[1]))
        elif len(parts) == 3:
            rows.append((parts[1], parts[2]))
    return rows


def _libc_names() -> frozenset[str]:
    for lib in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        if Path(lib).exists():
            p = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                               text=True)
            return frozenset(ln.split()[-1].split("@")[0] for ln in p.stdout.splitlines()
                             if ln.split())
    return frozenset()


def _render(name: str, **kw) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    return env.get_template(name).render(**kw)


PROBE = """\
/* xen-verify probe (not Xen code): the tree's layout constants, from its headers. */
#include <xen/lib.h>
#include <xen/mm.h>
#include <xen/sched.h>
const unsigned long xv_stack_size = STACK_SIZE;
const unsigned long xv_frametable_start = FRAMETABLE_VIRT_START;
const unsigned long xv_frametable_size = FRAMETABLE_SIZE;
const unsigned long xv_directmap_start = DIRECTMAP_VIRT_START;
const unsigned long xv_directmap_size = DIRECTMAP_SIZE;
const unsigned long xv_page_info_size = sizeof(struct page_info);
"""


# The tree's path as the lifted unit's debug info and __FILE__ strings name it: a harness
# built from one checkout serves the next one of the same content (checkouts move).
TREE_PREFIX = "/xv-tree"


def _tree_paths(root: Path) -> list[str]:
    return sorted({str(root), str(Path(root).resolve())}, key=len, reverse=True)


def _key(tree_key: str, source_text: bytes, argv: tuple[str, ...], functions: list[str],
         root: Path | None = None) -> str:
    h = hashlib.sha256()
    h.update(VERSION.encode())
    h.update(tree_key.encode())
    h.update(source_text)
    if root is not None:  # the command names the checkout's path: not part of the key
        for prefix in _tree_paths(root):
            argv = tuple(a.replace(prefix, TREE_PREFIX) for a in argv)
    h.update("\0".join(argv).encode())
    h.update("\0".join(sorted(functions)).encode())
    for p in sorted(TEMPLATES.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(TEMPLATES).as_posix().encode())
            h.update(p.read_bytes())
    h.update(Path(stubs.__file__).read_bytes())
    h.update(Path(dwarf.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    return h.hexdigest()[:24]


def lift(root: Path, source: str, argv: tuple[str, ...], cwd: Path, functions: list[str],
         cache: Path, tree_key: str = "", unit: str = "") -> Lifted:
    """Build (or reuse) the harness for ``source`` of the prepared tree at ``root``.

    ``functions`` are the unit's functions the driver must be able to call (static
    ones are made global in the lifted object). ``unit``: the .c the build compiles when
    that is not ``source`` itself (4.17+ shadow/guest_4.c #includes multi.c).
    Raises :class:`LiftError`.
    """
    src_path = Path(root) / (unit or source)
    try:
        text = src_path.read_bytes()
    except OSError as e:
        raise LiftError(f"cannot read {source}: {e.strerror}") from None
    key = _key(tree_key or str(root), text, tuple(argv), functions,
               root if tree_key else None)
    final = Path(cache) / "generic" / key
    meta = final / "lifted.pickle"
    if meta.exists():
        with contextlib.suppress(Exception), open(meta, "rb") as f:
            lifted: Lifted = pickle.load(f)
            if lifted.exe.exists():
                return lifted
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=final.parent))
    try:
        lifted = _build(root, source, src_path, argv, Path(cwd), functions, tmp, final)
        with open(tmp / "lifted.pickle", "wb") as f:
            pickle.dump(lifted, f)
        try:
            os.rename(tmp, final)
        except OSError:  # another run made it first: use theirs
            shutil.rmtree(tmp, ignore_errors=True)
            with open(meta, "rb") as f:
                return pickle.load(f)
        return lifted
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build(root: Path, source: str, src_path: Path, argv: tuple[str, ...], cwd: Path,
           functions: list[str], tmp: Path, final: Path) -> Lifted:
    obj = tmp / "unit.o"
    # gcc sees the tree and our overlay read-only and writes only ``tmp``
    box = ((Path(root).resolve(), OVERLAY), Path(tmp).resolve())
    notes: list[str] = []
    base = None
    err = None
    # -O0 keeps paths exact; -fkeep-inline-functions emits the unit's static inline
    # functions (callable on their own) but an always_inline body with "i" asm operands
    # needs its caller's constants; block coverage (the return site) can overflow the
    # byte-sized length fields of alternatives; some asm constraints need -O1.
    attempts = (("-O0", True, True), ("-O0", True, False), ("-O0", False, False),
                ("-O1", False, False))
    for opt, cov, keep in attempts:
        base = userspace_argv(argv, OVERLAY, opt, cov, keep)
        base += [f"-ffile-prefix-map={p}={TREE_PREFIX}" for p in _tree_paths(root)]
        try:
            _run([*base, "-c", str(src_path), "-o", str(obj)], cwd, f"compile {source}",
                 box=box)
            err = None
            if not cov:
                notes.append(f"compiled {opt} without block coverage: return sites are "
                             "the last call before the return")
            break
        except LiftError as e:
            err = e
    if err is not None:
        raise err
    assert base is not None
    types = dwarf.load(obj)
    defined = {n: t for t, n in _nm(obj, "--defined-only")}
    callable_fns: dict[str, str] = {}  # the tree's name -> the symbol the driver calls
    globalize = []
    for fn in functions:
        sym = fn
        if fn not in defined:  # renamed by a macro per object (multi.c: f__guest_4)
            sym = next((n for n in sorted(defined) if n.startswith(f"{fn}__")), fn)
        kind = defined.get(sym)
        if kind is None:
            continue
        if kind == "t":
            globalize.append(sym)
        if kind in ("T", "t", "W"):
            callable_fns[fn] = sym
    # Unit symbols that clash with libc (other than string functions) are renamed.
    libc = _libc_names()
    rename = [n for n, t in defined.items() if t in "TDBRW" and n in libc]
    # Resource-model functions the unit itself defines (mm.c's get_page, page_lock...)
    # become stubs for their callers in the unit too: the definition is weakened, kept
    # reachable as xv_real_<name> (the driver calls that when it is the one touched).
    model = resources.load()
    modelled = [n for n, t in defined.items() if t == "T" and n not in rename
                and any(r.kind in ("acquire", "release") for r in model.for_fn(n))
                and _plain_signature(types, n)]
    ocmd = ["objcopy"]
    for fn in globalize:
        ocmd += ["--globalize-symbol", fn]
    for n in rename:
        ocmd += ["--redefine-sym", f"{n}=xv_unit_{n}"]
    for n, (sec, value) in _symbol_places(obj, modelled).items():
        ocmd += ["--add-symbol", f"xv_real_{n}={sec}:{value:#x},global,function",
                 "--weaken-symbol", n]
    if len(ocmd) > 1:
        _run([*ocmd, str(obj)], tmp, "objcopy")
    for fn, sym in list(callable_fns.items()):
        if sym in rename:
            callable_fns[fn] = f"xv_unit_{sym}"
        elif sym in modelled:
            callable_fns[fn] = f"xv_real_{sym}"
    undefined = [n for t, n in _nm(obj, "-u") if t in ("U", "w")]
    wanted = [n for n in undefined
              if not n.startswith(("__asan", "__ubsan", "__sanitizer", "_GLOBAL_OFFSET", "xv_hook"))
              and n not in LIBC_OK]
    relocs = stubs.call_targets(obj)
    # Externals named like libc functions get stubs of their own name, so the runtime
    # keeps libc's (the unit's vsnprintf is Xen's, the runtime's is glibc's).
    clash = {n: f"xv_ext_{n}" for n in wanted if n in libc}
    if clash:
        ocmd = ["objcopy"]
        for n, new in clash.items():
            ocmd += ["--redefine-sym", f"{n}={new}"]
        _run([*ocmd, str(obj)], tmp, "objcopy")
        relocs |= {clash[n] for n in relocs if n in clash}
    wanted = [clash.get(n, n) for n in wanted]
    shown = {v: k for k, v in clash.items()}
    shown["xv_preempt_check"] = "hypercall_preempt_check"  # the overlay's stand-in
    stub_list = stubs.plan(sorted(set(wanted) | set(modelled)), types, relocs, shown,
                           modelled=set(modelled))
    if modelled:
        notes.append("modelled functions defined in the unit act as stubs for its other "
                      f"functions: {', '.join(sorted(modelled))}")
    (tmp / "stubs.c").write_text(stubs.render(stub_list, callable_fns))
    (tmp / "runtime.c").write_text(_render("runtime.c.j2", nstubs=len(stub_list)))
    (tmp / "probe.c").write_text(PROBE)
    probe_argv = [a for a in base if a != "-fkeep-inline-functions"]  # only constants
    _run([*probe_argv, "-c", str(tmp / "probe.c"), "-o", str(tmp / "probe.o")], cwd,
         "compile the layout probe", timeout=120, box=box)
    hcc = ["gcc", "-g", "-O1", "-w", *SAN]
    _run([*hcc, "-c", "runtime.c", "-o", "runtime.o"], tmp, "compile the runtime", box=box)
    _run([*hcc, "-c", "stubs.c", "-o", "stubs.o"], tmp, "compile the stubs", box=box)
    exe = tmp / "harness"
    _run([*hcc, "-no-pie", "-o", str(exe), "runtime.o", "stubs.o", "probe.o", "unit.o"],
         tmp, "link the harness", box=box)
    (tmp / "Makefile").write_text(_makefile(base, src_path, cwd, hcc))
    symbols = {}
    for addr, size, name in _nm_addr(exe):
        symbols[name] = addr
        if size:
            symbols[f"{name}:end"] = addr + size
    warn = _warn_rips(exe)
    return Lifted(source=source, exe=final / "harness", dir=final, types=types,
                  stubs=stub_list, functions=list(callable_fns), entries=callable_fns,
                  warn_rips=warn,
                  symbols=symbols, notes=notes)


def _plain_signature(types: dwarf.Types, name: str) -> bool:
    """At most six integer/pointer parameters and a register-sized return: a stub can
    stand in for it."""
    fn = types.functions.get(name)
    if fn is None or fn.variadic or len(fn.params) > 6:
        return False
    if fn.ret is not None and types.get(fn.ret).kind not in ("int", "bool", "enum", "ptr"):
        return False
    return all(types.get(t).kind in ("int", "bool", "enum", "ptr") for _, t in fn.params)


def _symbol_places(obj: Path, names: list[str]) -> dict[str, tuple[str, int]]:
    """(section, value) of each named symbol of a relocatable object."""
    from elftools.elf.elffile import ELFFile

    want = set(names)
    out: dict[str, tuple[str, int]] = {}
    if not want:
        return out
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        for sym in symtab.iter_symbols():
            if sym.name in want and isinstance(sym["st_shndx"], int):
                out[sym.name] = (elf.get_section(sym["st_shndx"]).name, sym["st_value"])
    return out


def _nm_addr(exe: Path) -> list[tuple[int, int, str]]:
    out = _run(["nm", "-S", "--defined-only", str(exe)], exe.parent, "nm")
    rows = []
    for ln in out.splitlines():
        parts = ln.split()
        if len(parts) == 4:
            rows.append((int(parts[0], 16), int(parts[1], 16), parts[3]))
        elif len(parts) == 3:
            rows.append((int(parts[0], 16), 0, parts[2]))
    return rows


def _makefile(base: list[str], src: Path, cwd: Path, hcc: list[str]) -> str:
    import shlex

    return (
        "# Rebuild this harness by hand (xen-verify generic mode).\n"
        "harness: runtime.o stubs.o probe.o unit.o\n"
        f"\t{shlex.join([*hcc, '-no-pie', '-o', 'harness'])} $^\n"
        "unit.o:\n"
        f"\tcd {shlex.quote(str(cwd))} && {shlex.join(base)} -c {shlex.quote(str(src))} "
        "-o $(CURDIR)/unit.o\n"
        "probe.o: probe.c\n"
        f"\tcd {shlex.quote(str(cwd))} && "
        f"{shlex.join([a for a in base if a != '-fkeep-inline-functions'])} -c $(CURDIR)/probe.c "
        "-o $(CURDIR)/probe.o\n"
        "%.o: %.c\n"
        f"\t{shlex.join([*hcc, '-c'])} $< -o $@\n"
    )


def _warn_rips(exe: Path) -> list[int]:
    """Addresses of the ud2 of WARN and run_in_exception_handler frames.

    Xen's bug frames live in ``.bug_frames.<type>`` sections (0: run_fn, 1: warn,
    2: bug, 3: assert); each entry starts with a 32-bit displacement from itself to
    its ud2. BUG and ASSERT frames are unwound; these two kinds continue.
    """
    from elftools.elf.elffile import ELFFile

    rips: list[int] = []
    with open(exe, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            m = re.fullmatch(r"\.bug_frames\.([0-9])", sec.name)
            if not m or int(m.group(1)) not in (0, 1):
                continue
            data = sec.data()
            base = sec["sh_addr"]
            # 8-byte entries: a 24-bit signed displacement to the ud2, then line and
            # pointer fields (x86 bug.h since 4.x; the generic bug.h keeps the layout)
            for off in range(0, len(data) - 7, 8):
                word = int.from_bytes(data[off:off + 4], "little")
                disp = (word & 0xFFFFFF) - ((word & 0x800000) << 1)
                rips.append(base + off + disp)
    return rips
