"""The tree's own build, prepared once per tree and cached by content; each unit's command.

Preparing a tree runs ``make defconfig`` (plus a fragment enabling what reviewers care
about), then only the steps of the hypervisor's own link recipe that generate headers
(``compile.h``, the compat headers, ``asm-macros.h``, ``asm-offsets.h``, ...): the recipe of
the ``$(TARGET)`` rule in ``xen/Makefile``, without its last line, which builds the
hypervisor. Reading the steps from the tree keeps every era right (Rules.mk before 4.17,
Kbuild-style since) without a table of versions.

The generated files are cached under ``build/<key>/`` (temp dir + rename): the key hashes
what they depend on (Kconfig, Makefiles, headers, build scripts, xen/tools, the
toolchain), so refs whose headers did not change share one entry, restored by copying.

A unit's compiler command is read from ``make -n V=1 <unit>.o``: the exact command the
build would run, with the tree's flags, recorded per cache entry (paths made relative to
the tree root so that any tree restored from the entry can use it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from verifier import sandbox, scratch
from verifier.archive import safe_extractall
from verifier.model import Checkout, VerifyError

Progress = Callable[[str], None]

# Bump when the preparation or the entry layout changes: old entries are then ignored.
RECIPE_VERSION = "5"
MARKER = ".xen-verify-prepared.json"  # in xen/: the key and the files preparation made
ROOT_TOKEN = "@XEN_VERIFY_TREE_ROOT@"  # the tree's own path, in what the cache keeps
# Kconfig symbols set on top of defconfig where the tree has them (olddefconfig drops any
# whose dependencies fail): the code reviewers care about, built and type-checked.
CONFIG_FRAGMENT = (
    "PV", "PV32", "HVM", "SHADOW_PAGING", "HAP", "MEM_ACCESS", "MEM_PAGING", "MEM_SHARING",
    "GRANT_TABLE", "ARGO", "HYPFS", "TBOOT", "XENOPROF", "PV_LINEAR_PT", "HVM_FEP",
)
TOOLS = ("make", "gcc", "flex", "bison", "python3", "perl", "objcopy")
# Top-level paths the hypervisor's build reads besides xen/ (Config.mk includes config/).
EXPORT_PATHS = ("xen", "Config.mk", "config", "tools/flask/policy")
# .c files that preparation itself compiles: their contents are part of the key.
PREPARE_SOURCES = {"asm-offsets.c", "asm-macros.c", "check.c"}
STEP_TIMEOUT = 900  # seconds, for the whole preparation


@dataclass(frozen=True)
class UnitCommand:
    source: str  # tree-relative path, e.g. "xen/arch/x86/mm.c"
    argv: tuple[str, ...]  # the exact compiler command the tree's build uses for its .o
    cwd: Path  # directory the command runs in
    # The .c the command compiles (tree-relative): ``source`` itself, or the unit that
    # #includes it (4.17+ shadow/guest_4.c includes multi.c), and the object it builds.
    unit: str = ""
    object: str = ""

    def compile_argv(self, output: Path) -> list[str]:
        """The command writing its object to ``output`` and no dependency files in the tree."""
        out: list[str] = []
        skip = False
        for a in self.argv:
            if skip:
                skip = False
            elif a in ("-MF", "-MQ", "-MT", "-o"):
                skip = True  # and its argument
            elif a in ("-MMD", "-MD", "-MP") or a.startswith(("-MF", "-MQ", "-MT", "-Wp,-MD,",
                                                                 "-Wp,-MMD,")):
                continue
            else:
                out.append(a)
        return [*out, "-o", str(output)]


@dataclass(frozen=True)
class PreparedTree:
    root: Path  # tree root (contains xen/), with generated headers and .config in place
    ok: bool
    reason: str  # why it could not be prepared ("" when ok): becomes n/a
    key: str  # the content key it was cached under
    entry: Path | None = None  # the cache entry (build/<key>)
    cached: bool = False  # restored from the cache (True) or prepared now (False)
    cpu_seconds: float = 0.0  # CPU time of the preparation's child processes (0 on a hit)
    era: str = ""  # "rules.mk" (xen/Makefile runs `-f Rules.mk _build`: before 4.17), "kbuild"
    # Where this tree records what it learns (unit commands, compile results): None for
    # the entry itself; a patched tree's go to the process's scratch (verifier.scratch),
    # so nothing derived from patch text is kept in the cache.
    store: Path | None = None
    _commands: dict[str, tuple[UnitCommand, ...]] = field(
        default_factory=dict, compare=False, hash=False, repr=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, compare=False, hash=False, repr=False)

    def config_fragment(self) -> tuple[str, ...]:
        """The fragment's symbols set in this tree's .config (what defconfig was added to)."""
        try:
            config = (self.root / "xen" / ".config").read_text()
        except OSError:
            return ()
        return tuple(s for s in CONFIG_FRAGMENT if f"\nCONFIG_{s}=y\n" in f"\n{config}")

    def unit_command(self, source: str) -> UnitCommand | None:
        """The command the tree's build compiles ``source`` (tree-relative ``.c``) with:
        the first of :meth:`unit_commands`. None when the tree is not prepared or its
        build has no command for that file."""
        cmds = self.unit_commands(source)
        return cmds[0] if cmds else None

    def unit_commands(self, source: str) -> tuple[UnitCommand, ...]:
        """Every command that compiles ``source``: one per object built from it (shadow's
        multi.c is built once per guest paging level), through the file that #includes
        it when it is not a unit of its own. Recorded once per cache entry."""
        if not self.ok:
            return ()
        source = source.removeprefix("./")
        with self._lock:
            if source not in self._commands:
                cmds = _cached_commands(self, source)
                if cmds is None:
                    cmds = _record_commands(self, source)
                self._commands[source] = cmds
            return self._commands[source]


# --------------------------------------------------------------------------- keys


def _toolchain() -> list[str]:
    """What the generated files depend on outside the tree: tools found and their versions."""
    out = []
    for tool in TOOLS:
        path = shutil.which(tool)
        version = ""
        if path and tool in ("gcc", "python3", "make"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                version = subprocess.run([path, "--version"], capture_output=True, text=True,
                                         timeout=30).stdout.splitlines()[0]
        out.append(f"{tool}={path or '-'} {version}")
    return out


_TOOLCHAIN: list[str] | None = None


def _keyed(rel: str) -> bool:
    """Whether a file under xen/ is an input of preparation (not an ordinary unit)."""
    name = rel.rsplit("/", 1)[-1]
    if rel.startswith(("tools/", "include/")):  # include/hypercall-defs.c (4.17+) too
        return True
    if name.endswith((".c", ".S")):
        return name in PREPARE_SOURCES
    return True


def content_key(root: Path) -> str:
    """Hash of what preparation reads: xen/ except ordinary units, Config.mk, config/."""
    global _TOOLCHAIN
    if _TOOLCHAIN is None:
        _TOOLCHAIN = _toolchain()
    h = hashlib.sha256()
    h.update(f"recipe {RECIPE_VERSION}\n".encode())
    h.update(("\n".join(_TOOLCHAIN) + "\n").encode())
    h.update(("fragment " + " ".join(CONFIG_FRAGMENT) + "\n").encode())
    xen = root / "xen"
    generated = set(_marker(xen).get("generated", ()))
    for top in ("Config.mk", "config"):
        for rel, path in _walk(root / top, top):
            _hash_file(h, rel, path)
    for rel, path in _walk(xen, ""):
        if rel in generated or rel == MARKER or not _keyed(rel):
            continue
        _hash_file(h, "xen/" + rel, path)
    return h.hexdigest()[:32]


def _walk(base: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    if base.is_file():
        yield prefix, base
        return
    if not base.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, base)
        for name in sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            yield (f"{prefix}/{rel}" if prefix else rel), Path(dirpath, name)


def _hash_file(h: hashlib._Hash, rel: str, path: Path) -> None:
    h.update(rel.encode() + b"\0")
    try:
        if path.is_symlink():
            h.update(b"link:" + os.readlink(path).encode())
        else:
            h.update(path.read_bytes())
    except OSError:
        h.update(b"unreadable")
    h.update(b"\0")


def _marker(xen: Path) -> dict:
    try:
        return json.loads((xen / MARKER).read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- preparing


def prepare_tree(root: Path, cache: Path, progress: Progress | None = None, *,
                 untrusted: bool = False) -> PreparedTree:
    """Generated headers and .config in place in ``root`` (a worktree or export, never the
    user's repository): restored from the cache by content key, or prepared and stored.

    ``untrusted``: the tree holds patch text (the patched worktree). It is restored from
    the cache where its build files are a trusted tree's (the usual case: a patch to .c
    files); what it prepares or records goes to the process's scratch, not the cache.
    """
    root = Path(root).resolve()
    xen = root / "xen"
    if not (xen / "Makefile").is_file():
        return PreparedTree(root, False, "the tree has no xen/Makefile", "")
    key = content_key(root)
    era = "rules.mk" if _rules_mk_build(xen) else "kbuild"
    entry = cache / "build" / key
    store = scratch.untrusted_cache(cache) / "build" / key if untrusted else None
    if store is not None and _read_meta(entry) is None:
        entry, store = store, None  # prepared from patch text: all of it in the scratch
    mark = _marker(xen)
    if mark.get("key") == key and mark.get("ok"):
        return PreparedTree(root, True, "", key, entry, cached=True, era=era, store=store)
    meta = _read_meta(entry)
    if meta is not None:
        if not meta.get("ok"):
            return PreparedTree(root, False, meta.get("reason", "preparation failed"), key,
                                entry, cached=True, era=era, store=store)
        _restore(entry, root)
        _write_marker(xen, key, meta.get("generated", []), True)
        return PreparedTree(root, True, "", key, entry, cached=True, era=era, store=store)
    if progress:
        progress(f"preparing the tree's build (defconfig, generated headers): {key[:12]}")
    before = _snapshot(xen)
    t0 = _child_cpu()
    ok, reason, transient = _run_preparation(xen)
    cpu = _child_cpu() - t0
    after = _snapshot(xen)
    # A tree prepared before (its marker) keeps what that preparation made, too.
    generated = sorted({p for p, st in after.items() if before.get(p) != st}
                       | (set(mark.get("generated", ())) & set(after)))
    if not transient:
        _store(cache, entry, root, generated, ok, reason, cpu)
    _write_marker(xen, key, generated, ok)
    return PreparedTree(root, ok, reason, key, entry, cached=False, cpu_seconds=cpu, era=era)


def _child_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _make_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "O", "KBUILD_OUTPUT", "V", "CROSS_COMPILE",
                "XEN_TARGET_ARCH", "CC", "CFLAGS", "EXTRA_CFLAGS_XEN_CORE"):
        env.pop(var, None)
    env["LC_ALL"] = "C"
    # 4.11-4.13 run `$(PYTHON) ?= python`; Debian has no `python`, and their scripts are
    # Python 3 already (before 4.11 they are not: that preparation fails and says so).
    python3 = shutil.which("python3")
    if python3:
        env["PYTHON"] = python3
    # compile.h records these: fixed, so that prepared trees do not differ by who built them.
    env.setdefault("XEN_WHOAMI", "xen-verify")
    env.setdefault("XEN_DOMAIN", "localdomain")
    env.setdefault("XEN_BUILD_HOST", "xen-verify")
    return env


def _sandbox_env() -> dict[str, str]:
    """What the tree's build gets inside the sandbox: _make_env's own settings, with
    the sandbox's PATH (this process's may name a virtualenv the sandbox cannot see)."""
    env = {k: v for k, v in _make_env().items()
           if k in ("LC_ALL", "XEN_WHOAMI", "XEN_DOMAIN", "XEN_BUILD_HOST")}
    python3 = shutil.which("python3", path=sandbox.PATH)
    if python3:
        env["PYTHON"] = python3
    return env


def _run(argv: list[str], cwd: Path, timeout: float,
         readable: tuple[Path, ...] = ()) -> subprocess.CompletedProcess[str]:
    """make in ``cwd`` (a tree's xen/): in the sandbox, the tree (its own copy: a worktree
    or an export) the only place it writes. A patch's Makefile is patch code too."""
    tree = Path(cwd).resolve().parent
    return sandbox.run_build_step(argv, cwd=cwd, readable=readable, writable=tree,
                                  timeout_s=timeout, env=_sandbox_env())


def _last_error(output: str) -> str:
    """The line of a failed step's output that says why, and what it means when known."""
    why = _first_error(output)
    if "SyntaxError" in output and re.search(r"print\b", output):
        script = re.findall(r'File "([^"]+\.py)"', output)
        name = f" ({Path(script[-1]).name})" if script else ""
        why = f"the tree's build scripts{name} {_PYTHON2} ({why})"
    return why


_PYTHON2 = "are Python 2, and this machine's python is Python 3"


def _first_error(output: str) -> str:
    make_noise = re.compile(r"^make(?:\[\d+\])?: (?:\*\*\*|Leaving|Entering|Nothing)")
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    own = [ln for ln in lines if not make_noise.match(ln)]
    for pat in (r"(?i)\berror\b", r"Traceback|not found|No such file|nonexistent|[Cc]annot|"
                r"denied|SyntaxError"):
        hits = [ln for ln in own if re.search(pat, ln)]
        if hits:
            return hits[0][:300]
    return ((own or lines)[-1] if lines else "no output")[:300]


def _target_recipe(xen: Path) -> list[str]:
    """The ``$(TARGET):`` rule's recipe in xen/Makefile, one logical line each."""
    text = (xen / "Makefile").read_text(errors="replace")
    lines = text.splitlines()
    for i, line in enumerate(lines):  # noqa: B007 (i is used after the loop)
        if re.match(r"^\$\(TARGET\)\s*:(?!=)", line):
            break
    else:
        return []
    recipe: list[str] = []
    j = i + 1
    while j < len(lines) and lines[j].startswith("\t"):
        logical = lines[j]
        while logical.endswith("\\") and j + 1 < len(lines):
            j += 1
            logical += "\n" + lines[j]
        recipe.append(logical)
        j += 1
    return recipe


def _rules_mk_build(xen: Path) -> bool:
    """Whether xen/Makefile runs its build as ``$(MAKE) -f Rules.mk _build`` (before 4.17):
    the $(TARGET) recipe then runs with Rules.mk read first."""
    try:
        text = (xen / "Makefile").read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^\t\$\(MAKE\) -f Rules\.mk _\$@", text, re.M) is not None


def _entry(xen: Path, mk_path: str, target: str) -> str:
    """The goal to give ``make -f Makefile -f <ours>`` to reach ``target`` the way the
    build reaches $(TARGET): directly (Kbuild era), or through ``build::``'s prerequisites
    and ``$(MAKE) -f Rules.mk`` (before 4.17: Makefile exports what Rules.mk needs).
    Appends the outer rule to our makefile when one is needed."""
    if not _rules_mk_build(xen):
        return target
    text = (xen / "Makefile").read_text(errors="replace")
    m = re.search(r"^build install\s*::\s*(\S[^\n]*)$", text, re.M)
    first = m.group(1).strip() if m else ""
    with open(mk_path, "a") as f:
        f.write(f"\n.PHONY: xen-verify-outer-{target}\n"
                f"xen-verify-outer-{target}: {first}\n"
                f"\t$(MAKE) -f Rules.mk -f {mk_path} {target}\n")
    return f"xen-verify-outer-{target}"


def _prerequisites(xen: Path) -> str:
    text = (xen / "Makefile").read_text(errors="replace")
    m = re.search(r"^\$\(TARGET\)\s*:(?!=)([^\n]*)", text, re.M)
    return m.group(1).strip() if m else ""


def _run_preparation(xen: Path) -> tuple[bool, str, bool]:
    """defconfig + fragment + olddefconfig, then the header steps: (ok, why not, whether
    the failure is this machine's for now: a missing tool, a timeout; not remembered)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    missing = [t for t in ("make", "gcc", "flex", "bison") if not shutil.which(t)]
    if missing:
        return False, f"the build needs {', '.join(missing)}, not installed (see ./bootstrap)", True

    def left() -> float:
        return max(10.0, deadline - time.monotonic())

    if not (xen / "Kconfig").is_file():
        return False, ("the tree has no Kconfig, so no `make defconfig` (Xen's build has "
                       "it from 4.7)"), False
    try:
        r = _run(["make", "defconfig"], xen, left())
        if r.returncode:
            return False, f"make defconfig failed: {_last_error(r.stdout + r.stderr)}", False
        wanted = _fragment(xen)
        if wanted:
            with open(xen / ".config", "a") as f:
                f.write("".join(f"CONFIG_{s}=y\n" for s in wanted))
            r = _run(["make", "olddefconfig"], xen, left())
            if r.returncode:
                return False, f"make olddefconfig failed: {_last_error(r.stdout + r.stderr)}", False
        recipe = _target_recipe(xen)
        if len(recipe) < 2:
            why = "xen/Makefile has no $(TARGET) recipe to take the header steps from"
            return False, why, False
        steps = recipe[:-1]
        mk_path = _temp_makefile(_prepare_makefile(_prerequisites(xen), steps))
        try:
            # the steps stay in order (each depends on the one before); within a step
            # the tree's own sub-makes share the cores (Xen's build is -j safe)
            r = _run(["make", f"-j{make_jobs()}", "--output-sync=target", "-f", "Makefile",
                      "-f", mk_path,
                      _entry(xen, mk_path, "xen-verify-prepare")], xen, left(),
                     readable=(Path(mk_path).parent,))
        finally:
            _drop_makefile(mk_path)
        if r.returncode:
            out = r.stdout + r.stderr
            done = re.findall(r"^xen-verify step (\d+)$", r.stdout, re.M)
            n = int(done[-1]) if done else 0
            step = " ".join(steps[n].split()) if n < len(steps) else "the header steps"
            why = _last_error(out)
            if _PYTHON2 in why:  # what it means says more than the step and the message
                return False, why, False
            return False, f"header step `{step}` failed: {why}", False
    except subprocess.TimeoutExpired:
        return False, f"preparation took longer than {STEP_TIMEOUT} s", True
    except OSError as e:
        return False, f"cannot run the tree's build: {e}", True
    for must in ("include/xen/compile.h",):
        if not (xen / must).exists():
            return False, f"the header steps did not generate xen/{must}", False
    if not list(xen.glob("include/asm*/asm-offsets.h")) and \
            not list(xen.glob("arch/*/include/asm/asm-offsets.h")):
        return False, "the header steps did not generate asm-offsets.h", False
    return True, "", False


def not_configured(root: Path, unit: str) -> str:
    """Why this tree's x86 configuration does not build ``unit`` (tree-relative .c), or
    "" where it does or cannot be told: the Makefile of its directory, and of each one
    above it, names it (``obj-$(CONFIG_X) += name.o`` / ``+= dir/``) under a symbol
    xen/.config leaves unset (xen/common/dt-overlay.c: CONFIG_OVERLAY_DTB, Arm only)."""
    xen = root / "xen"
    try:
        config = (xen / ".config").read_text(errors="replace")
    except OSError:
        return ""
    set_on = set(re.findall(r"^(CONFIG_\w+)=[ym]", config, re.M))
    path = Path(unit)
    name = path.stem + ".o"
    parts = path.parent.parts
    while len(parts) > 1:  # xen/common/x.c: xen/common/Makefile, then xen/Makefile ...
        mk = root.joinpath(*parts) / "Makefile"
        try:
            text = mk.read_text(errors="replace").replace("\\\n", " ")
        except OSError:
            return ""
        for m in re.finditer(r"^obj-\$\((CONFIG_\w+)\)\s*\+?=([^\n]*)$", text, re.M):
            if re.search(rf"(?:^|\s){re.escape(name)}(?:\s|$)", m.group(2)) \
                    and m.group(1) not in set_on:
                rel = mk.relative_to(root).as_posix()
                return (f"not in this x86 build: {rel} builds {name} only with "
                        f"{m.group(1)}, which the configuration leaves unset")
        name = parts[-1] + "/"
        parts = parts[:-1]
    return ""


def cores() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


_JOBS: list[int] = []  # [this ref's share, the run's -j], once set_jobs is called


def set_jobs(share: int, total: int | None = None) -> None:
    """How many processes one ref's work may run at once: ``share`` for its lifting
    (compiles whose harnesses then run paths on a wall-clock alarm: the refs running
    beside it get theirs), ``total`` (the run's -j) for the tree's make, whose header
    steps judge nothing. -j 1 keeps a run to one process at a time."""
    _JOBS[:] = [max(1, share), max(1, total if total is not None else share)]


def jobs() -> int:
    """This ref's share of -j (see set_jobs)."""
    return _JOBS[0] if _JOBS else cores()


def make_jobs() -> int:
    return _JOBS[1] if _JOBS else cores()


def _temp_makefile(text: str) -> str:
    """Our makefile in a private directory of its own (bound read-only into the sandbox);
    remove it with _drop_makefile."""
    d = Path(tempfile.mkdtemp(prefix="xen-verify-mk-"))
    path = d / "xen-verify.mk"
    path.write_text(text)
    return str(path)


def _drop_makefile(path: str) -> None:
    shutil.rmtree(Path(path).parent, ignore_errors=True)


def _fragment(xen: Path) -> list[str]:
    """The fragment's symbols that this tree's Kconfig defines and .config does not set."""
    defined: set[str] = set()
    for path in xen.rglob("Kconfig*"):
        with contextlib.suppress(OSError):
            defined.update(re.findall(r"^\s*(?:menu)?config\s+(\w+)",
                                      path.read_text(errors="replace"), re.M))
    try:
        config = (xen / ".config").read_text()
    except OSError:
        config = ""
    return [s for s in CONFIG_FRAGMENT
            if s in defined and not re.search(rf"^CONFIG_{s}=y$", config, re.M)]


def _prepare_makefile(prereqs: str, steps: list[str]) -> str:
    """A makefile read after xen/Makefile: one target per header step, each announcing
    itself, so a failure names the step."""
    out = [".PHONY: xen-verify-prepare"]
    prev = prereqs
    for n, step in enumerate(steps):
        out.append(f".PHONY: xen-verify-step-{n}")
        out.append(f"xen-verify-step-{n}: {prev}")
        out.append(f"\t@echo 'xen-verify step {n}'")
        out.append(step)
        prev = f"xen-verify-step-{n}"
    out.append(f"xen-verify-prepare: {prev}")
    out.append("\t@:")
    return "\n".join(out) + "\n"


def _snapshot(xen: Path) -> dict[str, tuple[int, int, str]]:
    """Every file and link under xen/: (mtime, size, link target)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(xen):
        rel_dir = os.path.relpath(dirpath, xen)
        names = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        for name in names:
            p = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel == MARKER:
                continue
            try:
                st = os.lstat(p)
            except OSError:
                continue
            link = os.readlink(p) if os.path.islink(p) else ""
            out[rel] = (st.st_mtime_ns, st.st_size, link)
    return out


def _write_marker(xen: Path, key: str, generated: list[str], ok: bool) -> None:
    tmp = xen / f"{MARKER}.tmp"
    tmp.write_text(json.dumps({"key": key, "ok": ok, "generated": generated}))
    os.replace(tmp, xen / MARKER)


def _read_meta(entry: Path) -> dict | None:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _store(cache: Path, entry: Path, root: Path, generated: list[str], ok: bool, reason: str,
           cpu: float) -> None:
    """Write the entry in a temp dir and rename it into place (first writer wins)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prep-", dir=entry.parent))
    try:
        xen = root / "xen"
        if ok:
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w") as tar:
                for rel in generated:
                    with contextlib.suppress(OSError):
                        _add_relocatable(tar, xen / rel, f"xen/{rel}", root)
            (tmp / "generated.tar").write_bytes(buf.getvalue())
        meta = {"ok": ok, "reason": reason, "generated": generated, "cpu_seconds": cpu,
                "root": str(root), "recipe": RECIPE_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        (tmp / "commands").mkdir()
        try:
            os.replace(tmp, entry)
        except OSError:
            if not entry.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _add_relocatable(tar: tarfile.TarFile, path: Path, arcname: str, root: Path) -> None:
    """Add a generated file with the tree's own path in its text (the dependency files of
    Rules.mk-era trees name headers absolutely) written as ROOT_TOKEN, so that the entry
    restores into any tree."""
    info = tar.gettarinfo(str(path), arcname)
    if not info.isreg() or info.size > 16 << 20:
        tar.addfile(info)
        return
    data = path.read_bytes()
    data = data.replace(str(root).encode(), ROOT_TOKEN.encode())
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _restore(entry: Path, root: Path) -> None:
    with tarfile.open(entry / "generated.tar") as tar:
        members = tar.getmembers()
        for m in members:  # a regenerated file replaces what is there
            p = root / m.name
            if p.is_symlink() or p.is_file():
                p.unlink()
        safe_extractall(tar, root, label=f"cached build {entry.name}", members=members)
    token, here = ROOT_TOKEN.encode(), str(root).encode()
    for m in members:
        if m.isreg():
            p = root / m.name
            data = p.read_bytes()
            if token in data:
                st = p.stat()
                p.write_bytes(data.replace(token, here))
                os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


# --------------------------------------------------------------------------- unit commands

COMPILERS = re.compile(r"^(?:.*/)?(?:[\w.-]+-)?(?:gcc|cc|clang)(?:-[\d.]+)?$")


def _command_file(tree: PreparedTree, source: str, *, recorded: bool = False) -> Path:
    """The unit-command record of ``source``: the entry's, or (``recorded``: where this
    tree writes, and reads when the entry has none) its store's."""
    assert tree.entry is not None
    name = hashlib.sha1(source.encode()).hexdigest()[:20] + ".json"
    if recorded and tree.store is not None:
        return tree.store / "commands" / name
    return tree.entry / "commands" / name


def _cached_commands(tree: PreparedTree, source: str) -> tuple[UnitCommand, ...] | None:
    if tree.entry is None:
        return None
    try:
        path = _command_file(tree, source)
        if not path.is_file():
            path = _command_file(tree, source, recorded=True)
        data = json.loads(path.read_text())
        root = str(tree.root)
        return tuple(
            UnitCommand(source=source, argv=tuple(a.replace(ROOT_TOKEN, root) for a in c["argv"]),
                        cwd=Path(c["cwd"].replace(ROOT_TOKEN, root)), unit=c["unit"],
                        object=c["object"])
            for c in data["commands"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _record_commands(tree: PreparedTree, source: str) -> tuple[UnitCommand, ...]:
    """``make -n V=1`` for each object built from ``source``; stored in the entry."""
    pairs = objects_for(tree.root / "xen", source)
    found = unit_commands_from_make(tree.root, pairs, tree.era)
    cmds = [UnitCommand(source=source, argv=c.argv, cwd=c.cwd, unit=unit, object=obj)
            for (obj, unit), c in zip(pairs, found, strict=True) if c is not None]
    if tree.entry is None or not (tree.entry / "meta.json").is_file():
        return tuple(cmds)
    root = str(tree.root)
    data = {"source": source, "commands": [
        {"argv": [a.replace(root, ROOT_TOKEN) for a in c.argv],
         "cwd": str(c.cwd).replace(root, ROOT_TOKEN), "unit": c.unit, "object": c.object}
        for c in cmds]}
    path = _command_file(tree, source, recorded=True)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    return tuple(cmds)


MAX_VARIANTS = 4
INCLUDE_C_RE = re.compile(r'^\s*#\s*include\s*["<]([^">]+\.c)[">]', re.M)


def _makefile_objects(d: Path) -> tuple[set[str], str]:
    try:
        text = (d / "Makefile").read_text(errors="replace")
    except OSError:
        return set(), ""
    return set(re.findall(r"(?<![\w/.$-])([\w.-]+\.o)\b", text)), text


def objects_for(xen: Path, source: str, depth: int = 0) -> list[tuple[str, str]]:
    """(object, compiled .c) pairs, tree-relative, that the build makes from ``source``.

    A file its directory's Makefile names as an object is a unit of its own. Otherwise:
    a pattern rule building several objects from it (``guest_%.o: multi.c``, before 4.17),
    or the units that #include it (``guest_4.c``: ``#include "multi.c"``). With neither,
    the object of its own name, which the build may not configure.
    """
    rel = source[len("xen/"):]
    d_rel, _, name = rel.rpartition("/")
    d = xen / d_rel
    stem = name[:-2]
    own = [(f"xen/{d_rel}/{stem}.o" if d_rel else f"xen/{stem}.o", source)]
    objs, text = _makefile_objects(d)
    if f"{stem}.o" in objs:
        return own
    out: list[tuple[str, str]] = []
    for m in re.finditer(rf"^(?:\$\(obj\)/)?([\w.-]*)%([\w.-]*)\.o\s*:[^\n]*?"
                         rf"(?:\$\(src\)/|\s){re.escape(name)}\b", text, re.M):
        pre, post = m.group(1), m.group(2)
        for o in sorted(objs):
            if o.startswith(pre) and o.endswith(post + ".o") and len(o) > len(pre + post) + 2:
                out.append((f"xen/{d_rel}/{o}" if d_rel else f"xen/{o}", source))
    if not out and depth < 2:
        target = (xen.parent / source).resolve()
        for dirpath, _dirs, files in os.walk(xen):
            for f in files:
                if not f.endswith(".c"):
                    continue
                p = Path(dirpath, f)
                try:
                    text_c = p.read_text(errors="replace")
                except OSError:
                    continue
                if f"{name}" not in text_c:
                    continue
                for inc in INCLUDE_C_RE.findall(text_c):
                    if (p.parent / inc).resolve() == target:
                        includer = p.relative_to(xen.parent).as_posix()
                        out.extend(objects_for(xen, includer, depth + 1))
    seen: list[tuple[str, str]] = []
    for pair in out:
        if pair not in seen:
            seen.append(pair)
    return seen[:MAX_VARIANTS] or own


def unit_commands_from_make(root: Path, pairs: list[tuple[str, str]],
                            era: str) -> list[UnitCommand | None]:
    """For each (object, .c) pair, tree-relative, the command compiling the .c into the
    object, as one ``make -n V=1`` run over all the objects prints it."""
    pairs = [(o, u) for o, u in pairs if u.startswith("xen/") and u.endswith(".c")
             and o.startswith("xen/")]
    if not pairs:
        return []
    xen = root / "xen"
    objs = [o[len("xen/"):] for o, _ in pairs]
    if era == "kbuild":
        argv = ["make", "-n", "-w", "-k", "V=1", *objs]
        mk_path = None
    else:
        lines = []
        for obj in objs:
            d, _, name = obj.rpartition("/")
            lines.append(f"\t-$(MAKE) -f $(BASEDIR)/Rules.mk -C {d or '.'} {name}\n")
        mk_path = _temp_makefile("xen-verify-unit:\n" + "".join(lines))
        argv = ["make", "-n", "-w", "-k", "-f", "Makefile", "-f", mk_path,
                _entry(xen, mk_path, "xen-verify-unit")]
    try:
        r = _run(argv, xen, 300, readable=(Path(mk_path).parent,) if mk_path else ())
    except (OSError, subprocess.TimeoutExpired, VerifyError):
        return [None] * len(pairs)
    finally:
        if mk_path:
            _drop_makefile(mk_path)
    return [parse_compile_command(r.stdout, unit, root, obj) for obj, unit in pairs]


def unit_command_from_make(root: Path, source: str, era: str,
                           obj: str = "") -> UnitCommand | None:
    """The compiler command of ``source``'s object (default ``<source>.o``), as
    ``make -n V=1`` prints it."""
    found = unit_commands_from_make(root, [(obj or source[:-2] + ".o", source)], era)
    return found[0] if found else None


def _builds(words: list[str], here: Path, obj: Path) -> bool:
    """Whether a compiler command's ``-o``/``-MQ`` names ``obj`` (Kbuild writes
    ``.name.o.tmp`` and names the object with ``-MQ``)."""
    for flag in ("-o", "-MQ", "-MT"):
        for i, w in enumerate(words[:-1]):
            if w != flag:
                continue
            p = Path(os.path.normpath(here / words[i + 1]))
            name = p.name
            if name.startswith(".") and name.endswith(".tmp"):
                name = name[1:-4]
            if p.with_name(name) == obj:
                return True
    return False


def parse_compile_command(output: str, source: str, root: Path,
                          obj: str = "") -> UnitCommand | None:
    """The compiler invocation compiling ``source`` in make's dry-run output.

    Tracks ``make: Entering directory`` for the directory each command runs in, and
    splits each recipe line into shell commands (``;``, ``&&``, ``||``), skipping the
    ``echo '...'`` that Kbuild prints before running.
    """
    cwd = root / "xen"
    dirs: list[Path] = [cwd]
    target = (root / source).resolve()
    for line in output.splitlines():
        m = re.match(r"^make(?:\[\d+\])?: Entering directory [`'](.*)'$", line)
        if m:
            dirs.append(Path(m.group(1)))
            continue
        m = re.match(r"^make(?:\[\d+\])?: Leaving directory", line)
        if m:
            if len(dirs) > 1:
                dirs.pop()
            continue
        if "-c" not in line:
            continue
        try:
            lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lex.whitespace_split = True
            tokens = list(lex)
        except ValueError:
            continue
        for words in _split_commands(tokens):
            if not words or not COMPILERS.match(words[0]) or "-c" not in words:
                continue
            here = dirs[-1]
            if obj and not _builds(words, here, Path(os.path.normpath(root / obj))):
                continue
            for w in words[1:]:
                if w.endswith(".c") and not w.startswith("-") and (here / w).resolve() == target:
                    return UnitCommand(source=source, argv=tuple(words), cwd=here)
    return None


def _split_commands(tokens: list[str]) -> Iterator[list[str]]:
    cur: list[str] = []
    for t in tokens:
        if t in (";", "&&", "||", "|", "&"):
            yield cur
            cur = []
        else:
            cur.append(t)
    yield cur


# --------------------------------------------------------------------------- pairs


def export_commit(repo: Path, commit: str, dest: Path) -> Path:
    """``commit``'s build inputs (xen/, Config.mk, config/) into ``dest`` (created), via
    git archive from ``repo`` (a worktree or a git directory): nothing in it changes."""
    listed = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", commit,
                             "--", *EXPORT_PATHS], capture_output=True, text=True, check=False)
    paths = [p for p in listed.stdout.splitlines() if p]
    if listed.returncode or "xen" not in paths:
        raise VerifyError(f"cannot read {commit[:12]}'s tree: {listed.stderr.strip() or 'no xen/'}")
    out = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "--",
                          *paths], capture_output=True, check=False)
    if out.returncode:
        raise VerifyError(f"cannot read {commit[:12]}'s tree: {out.stderr.decode().strip()}")
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=dest.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(out.stdout)) as tar:
            safe_extractall(tar, tmp, label=f"{commit[:12]}'s tree")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _base_dir(co: Checkout, cache: Path) -> Path:
    """Where the base export lives: beside the worktree (removed with it) when the worktree
    is a job folder under cache/work, else a job folder of its own there."""
    work = (cache / "work").resolve()
    parent = Path(co.path).resolve().parent
    if parent.parent == work:
        return parent / f"generic-base-{co.commit[:12]}"
    work.mkdir(parents=True, exist_ok=True)
    job = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-generic-", dir=work))
    return job / f"base-{co.commit[:12]}"


_BASES: dict[tuple[str, str], Path] = {}


def _exported(co: Checkout, commit: str, cache: Path, what: str) -> Path:
    """``commit`` exported with git archive beside the worktree (once per worktree)."""
    key = (str(Path(co.path).resolve()), commit)
    root = _BASES.get(key)
    if root is None or not (root / "xen").is_dir():
        root = _base_dir(co, cache)
        if what != "base":
            root = root.with_name(root.name.replace("base-", f"{what}-", 1))
        if not (root / "xen").is_dir():
            root.parent.mkdir(parents=True, exist_ok=True)
            export_commit(Path(co.path), commit, root)
        _BASES[key] = root
    return root


def prepared_pair(co: Checkout, cache: Path, progress: Progress | None = None, *,
                  patched_commit: str | None = None) -> tuple[PreparedTree, PreparedTree]:
    """base (co.commit, exported with git archive under cache/work) and patched (the
    worktree co.path as the patch left it, or ``patched_commit`` exported beside it: then
    the worktree is only read, and a check pack may read it at the same time); both
    prepared."""
    base_root = _exported(co, co.commit, cache, "base")
    patched_root = _exported(co, patched_commit, cache, "patched") if patched_commit \
        else Path(co.path)
    base = prepare_tree(base_root, cache, progress)
    patched = prepare_tree(patched_root, cache, progress, untrusted=True)
    return base, patched




# --------------------------------------------------------------------------- compiling

DIAG_RE = re.compile(
    r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?:(?P<col>\d+):)? (?P<kind>fatal error|error|warning):"
    r" (?P<msg>.*?)(?: \[(?P<opt>-W[^\]]+)\])?$")
FUNC_RE = re.compile(r"^(?P<file>[^:\s][^:]*): In (?:member )?function [`'‘](?P<func>[^'’]+)['’]:$")
TOOL_RE = re.compile(r"^(?P<file>cc1|cc1plus|gcc|as|collect2): "
                     r"(?P<kind>fatal error|error|warning): (?P<msg>.*)$")


@dataclass(frozen=True)
class Diagnostic:
    """One compiler message, its location tree-relative (``xen/arch/x86/mm.c``)."""

    file: str
    line: int
    kind: str  # "error" | "warning" (a warning -Werror promotes stays a "warning")
    message: str
    option: str = ""  # "-Wunused-variable" (from "[-Werror=unused-variable]" too)
    function: str = ""  # the "In function 'f':" it was reported under
    promoted: bool = False  # a warning -Werror made an error ("[-Werror=...]")

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def text(self) -> str:
        """As gcc printed it, the path tree-relative and without the column."""
        if self.promoted:
            return f"{self.location}: error: {self.message} [-Werror={self.option[2:]}]"
        opt = f" [{self.option}]" if self.option else ""
        return f"{self.location}: {self.kind}: {self.message}{opt}"

    def identity(self) -> tuple[str, str, str, str, str]:
        """What two builds' messages are matched by: everything but the line number."""
        return (self.file, self.kind, self.message, self.option, self.function)


@dataclass(frozen=True)
class CompileResult:
    source: str
    returncode: int
    diagnostics: tuple[Diagnostic, ...]
    output: str  # the compiler's stderr, trimmed
    seconds: float = 0.0
    argv: tuple[str, ...] = ()
    cached: bool = False  # the same compile's result, kept in the cache entry

    @property
    def errors(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.kind == "error")

    @property
    def warnings(self) -> tuple[Diagnostic, ...]:
        return tuple(d for d in self.diagnostics if d.kind == "warning")


def parse_diagnostics(output: str, cwd: Path, root: Path) -> list[Diagnostic]:
    """gcc's ``file:line:col: error|warning: message [-Wopt]`` lines, paths tree-relative."""
    out: list[Diagnostic] = []
    func = ""
    for line in output.splitlines():
        m = FUNC_RE.match(line)
        if m:
            func = m.group("func")
            continue
        if re.match(r"^[^:\s][^:]*: At top level:$", line):
            func = ""
            continue
        m = DIAG_RE.match(line)
        if m:
            opt = m.group("opt") or ""
            kind = "error" if m.group("kind") in ("error", "fatal error") else "warning"
            promoted = opt.startswith("-Werror=")
            if promoted:
                opt, kind = "-W" + opt[len("-Werror="):], "warning"
            out.append(Diagnostic(_tree_path(m.group("file"), cwd, root), int(m.group("line")),
                                  kind, m.group("msg"), opt, func, promoted))
            continue
        m = TOOL_RE.match(line)
        if m and "all warnings being treated as errors" not in m.group("msg"):
            kind = "error" if "error" in m.group("kind") else "warning"
            out.append(Diagnostic(m.group("file"), 0, kind, m.group("msg")))
    return out


def _tree_path(name: str, cwd: Path, root: Path) -> str:
    p = Path(name) if os.path.isabs(name) else cwd / name
    p = Path(os.path.normpath(p))
    with contextlib.suppress(ValueError):
        return p.relative_to(root).as_posix()
    return name


def _result_file(tree: PreparedTree, cmd: UnitCommand) -> Path | None:
    """Where a compile's result is kept: by the entry (headers, flags, toolchain), the
    command and the text of the .c files it reads (its unit, the touched file, the .c files
    they #include). None when the tree has no cache entry."""
    if tree.entry is None or not (tree.entry / "meta.json").is_file():
        return None
    root = str(tree.root)
    h = hashlib.sha256()
    h.update(json.dumps([a.replace(root, ROOT_TOKEN) for a in cmd.argv]).encode())
    h.update(str(cmd.cwd).replace(root, ROOT_TOKEN).encode())
    files = {cmd.source, cmd.unit or cmd.source}
    for rel in list(files):
        p = tree.root / rel
        with contextlib.suppress(OSError):
            for inc in INCLUDE_C_RE.findall(p.read_text(errors="replace")):
                with contextlib.suppress(ValueError):
                    files.add((p.parent / inc).resolve().relative_to(tree.root).as_posix())
    for rel in sorted(files):
        _hash_file(h, rel, tree.root / rel)
    return (tree.store or tree.entry) / "results" / (h.hexdigest()[:32] + ".json")


def _load_result(path: Path | None, cmd: UnitCommand, root: Path) -> CompileResult | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
        diags = tuple(Diagnostic(**d) for d in data["diagnostics"])
        return CompileResult(cmd.source, data["returncode"], diags,
                             data["output"].replace(ROOT_TOKEN, str(root)), data["seconds"],
                             cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_result(path: Path | None, result: CompileResult, root: Path) -> None:
    if path is None or result.returncode < 0:  # a timeout is not a result
        return
    data = {"returncode": result.returncode, "seconds": result.seconds,
            "output": result.output.replace(str(root), ROOT_TOKEN),
            "diagnostics": [d.__dict__ for d in result.diagnostics]}
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def compile_command(tree: PreparedTree, cmd: UnitCommand, timeout: float = 300) -> CompileResult:
    """Run one recorded command, its object to a temporary file; messages tree-relative.
    A compile of the same text with the same command under the same entry is reused."""
    keep = _result_file(tree, cmd)
    known = _load_result(keep, cmd, tree.root)
    if known is not None:
        return known
    result = _run_compile(tree, cmd, timeout)
    _save_result(keep, result, tree.root)
    return result


def _run_compile(tree: PreparedTree, cmd: UnitCommand, timeout: float) -> CompileResult:
    with tempfile.TemporaryDirectory(prefix="xen-verify-cc-") as tmp:
        argv = cmd.compile_argv(Path(tmp) / "unit.o")
        t0 = time.monotonic()
        try:
            # the unit is patch text: gcc reads the tree and writes only the object
            r = sandbox.run_build_step(argv, cwd=cmd.cwd, readable=(tree.root,),
                                       writable=Path(tmp), timeout_s=timeout,
                                       env=_sandbox_env(), limits=sandbox.COMPILE_LIMITS)
        except subprocess.TimeoutExpired:
            return CompileResult(cmd.source, -1, (), f"compiler timed out after {timeout:.0f} s",
                                 timeout, tuple(argv))
        except OSError as e:
            raise VerifyError(f"cannot run the compiler for {cmd.source}: {e}") from None
        secs = time.monotonic() - t0
    diags = parse_diagnostics(r.stderr, cmd.cwd, tree.root)
    return CompileResult(cmd.source, r.returncode, tuple(diags), r.stderr[-8000:], secs,
                         tuple(argv))


def compile_unit(tree: PreparedTree, source: str, timeout: float = 300) -> CompileResult:
    """Compile ``source`` with the tree's own command(s): every object built from it, the
    messages merged (one copy of a message every variant gives)."""
    cmds = tree.unit_commands(source)
    if not cmds:
        raise VerifyError(f"the tree's build has no compiler command for {source}")
    results = [compile_command(tree, c, timeout) for c in cmds]
    if len(results) == 1:
        return results[0]
    diags: list[Diagnostic] = []
    for r in results:
        for d in r.diagnostics:
            if d not in diags:
                diags.append(d)
    rc = next((r.returncode for r in results if r.returncode), 0)
    return CompileResult(source, rc, tuple(diags), "\n".join(r.output for r in results)[-8000:],
                         sum(r.seconds for r in results), results[0].argv,
                         all(r.cached for r in results))


def new_diagnostics(base: CompileResult | None, patched: CompileResult) -> list[Diagnostic]:
    """Patched's messages that base lacks, matched ignoring line numbers (a multiset: two
    copies on patched against one on base leave one new)."""
    from collections import Counter

    seen = Counter(d.identity() for d in (base.diagnostics if base else ()))
    out = []
    for d in patched.diagnostics:
        if seen[d.identity()] > 0:
            seen[d.identity()] -= 1
        else:
            out.append(d)
    return out

__all__ = [
    "CompileResult",
    "Diagnostic",
    "PreparedTree",
    "UnitCommand",
    "compile_command",
    "compile_unit",
    "content_key",
    "export_commit",
    "new_diagnostics",
    "objects_for",
    "parse_compile_command",
    "parse_diagnostics",
    "prepare_tree",
    "prepared_pair",
]
