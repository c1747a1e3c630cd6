"""The tree's own build, prepared once per tree and cached by content; each unit's command.

Preparing a tree runs ``make defconfig`` (plus a fragment enabling what reviewers care
about), then only the steps of the hypervisor's own link recipe that generate headers
(``compile.h``, the compat headers, ``asm-macros.h``, ``asm-offsets.h``, ...): the recipe of
the ``$(TARGET)`` rule in ``xen/Makefile``, without its last line, which builds the
hypervisor. Reading the steps from the tree keeps every era right (Rules.mk before 4.15,
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

from verifier.archive import safe_extractall
from verifier.model import Checkout, VerifyError

Progress = Callable[[str], None]

# Bump when the preparation or the entry layout changes: old entries are then ignored.
RECIPE_VERSION = "1"
MARKER = ".xen-verify-prepared.json"  # in xen/: the key and the files preparation made
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

    def compile_argv(self, output: Path) -> list[str]:
        """The command writing its object to ``output`` and no dependency files in the tree."""
        out: list[str] = []
        skip = False
        for i, a in enumerate(self.argv):
            if skip:
                skip = False
                continue
            if a in ("-MF", "-MQ", "-MT", "-o"):
                skip = True
                continue
            if a in ("-MMD", "-MD", "-MP") or (a.startswith(("-MF", "-MQ", "-MT")) and len(a) > 3):
                continue
            if a.startswith("-Wp,-MD,") or a.startswith("-Wp,-MMD,"):
                continue
            out.append(a)
            del i
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
    era: str = ""  # "kbuild" (single-target rules in xen/Makefile) or "rules.mk"
    _commands: dict[str, UnitCommand | None] = field(
        default_factory=dict, compare=False, hash=False, repr=False)
    _lock: threading.Lock = field(
        default_factory=threading.Lock, compare=False, hash=False, repr=False)

    def unit_command(self, source: str) -> UnitCommand | None:
        """The command the tree's build compiles ``source`` (tree-relative ``.c``) with.

        None when the tree is not prepared or its build has no command for that file.
        """
        if not self.ok:
            return None
        source = source.lstrip("./")
        with self._lock:
            if source in self._commands:
                return self._commands[source]
            cmd = _cached_command(self, source)
            if cmd is None and self.entry is not None:
                cmd = _record_command(self, source)
            self._commands[source] = cmd
            return cmd


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
    if rel.startswith("tools/"):
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


def prepare_tree(root: Path, cache: Path, progress: Progress | None = None) -> PreparedTree:
    """Generated headers and .config in place in ``root`` (a worktree or export, never the
    user's repository): restored from the cache by content key, or prepared and stored."""
    root = Path(root).resolve()
    xen = root / "xen"
    if not (xen / "Makefile").is_file():
        return PreparedTree(root, False, "the tree has no xen/Makefile", "")
    key = content_key(root)
    era = "kbuild" if _single_target_rules(xen) else "rules.mk"
    entry = cache / "build" / key
    mark = _marker(xen)
    if mark.get("key") == key and mark.get("ok"):
        return PreparedTree(root, True, "", key, entry, cached=True, era=era)
    meta = _read_meta(entry)
    if meta is not None:
        if not meta.get("ok"):
            return PreparedTree(root, False, meta.get("reason", "preparation failed"), key,
                                entry, cached=True, era=era)
        _restore(entry, root)
        _write_marker(xen, key, meta.get("generated", []), True)
        return PreparedTree(root, True, "", key, entry, cached=True, era=era)
    if progress:
        progress(f"preparing the tree's build (defconfig, generated headers): {key[:12]}")
    before = _snapshot(xen)
    t0 = _child_cpu()
    ok, reason = _run_preparation(xen)
    cpu = _child_cpu() - t0
    after = _snapshot(xen)
    generated = sorted(p for p, st in after.items() if before.get(p) != st)
    _store(cache, entry, root, generated, ok, reason, cpu)
    _write_marker(xen, key, generated, ok)
    return PreparedTree(root, ok, reason, key, entry, cached=False, cpu_seconds=cpu, era=era)


def _child_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _single_target_rules(xen: Path) -> bool:
    try:
        text = (xen / "Makefile").read_text(errors="replace")
    except OSError:
        return False
    return re.search(r"^%\.o %\.i %\.s: %\.c", text, re.M) is not None


def _make_env() -> dict[str, str]:
    env = dict(os.environ)
    for var in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "O", "KBUILD_OUTPUT", "V", "CROSS_COMPILE",
                "XEN_TARGET_ARCH", "CC", "CFLAGS", "EXTRA_CFLAGS_XEN_CORE"):
        env.pop(var, None)
    env["LC_ALL"] = "C"
    # compile.h records these: fixed, so that prepared trees do not differ by who built them.
    env.setdefault("XEN_WHOAMI", "xen-verify")
    env.setdefault("XEN_DOMAIN", "localdomain")
    env.setdefault("XEN_BUILD_HOST", "xen-verify")
    return env


def _run(argv: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, env=_make_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _last_error(output: str) -> str:
    """The line of a failed step's output that says why."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not re.match(r"make(\[\d+\])?: (Leaving|Entering)", ln)]
    for pat in (r"\berror\b", r"Error|Traceback|not found|No such file|SyntaxError"):
        hits = [ln for ln in lines
                if re.search(pat, ln) and not re.match(r"make(\[\d+\])?: \*\*\*", ln)]
        if hits:
            return hits[0][:300]
    return (lines[-1] if lines else "no output")[:300]


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


def _prerequisites(xen: Path) -> str:
    text = (xen / "Makefile").read_text(errors="replace")
    m = re.search(r"^\$\(TARGET\)\s*:(?!=)([^\n]*)", text, re.M)
    return m.group(1).strip() if m else ""


def _run_preparation(xen: Path) -> tuple[bool, str]:
    """defconfig + fragment + olddefconfig, then the header steps; (ok, why not)."""
    deadline = time.monotonic() + STEP_TIMEOUT
    missing = [t for t in ("make", "gcc", "flex", "bison") if not shutil.which(t)]
    if missing:
        return False, f"the build needs {', '.join(missing)}, not installed (see ./bootstrap)"

    def left() -> float:
        return max(10.0, deadline - time.monotonic())

    try:
        r = _run(["make", "defconfig"], xen, left())
        if r.returncode:
            return False, f"make defconfig failed: {_last_error(r.stdout + r.stderr)}"
        wanted = _fragment(xen)
        if wanted:
            with open(xen / ".config", "a") as f:
                f.write("".join(f"CONFIG_{s}=y\n" for s in wanted))
            r = _run(["make", "olddefconfig"], xen, left())
            if r.returncode:
                return False, f"make olddefconfig failed: {_last_error(r.stdout + r.stderr)}"
        recipe = _target_recipe(xen)
        if len(recipe) < 2:
            return False, "xen/Makefile has no $(TARGET) recipe to take the header steps from"
        steps = recipe[:-1]
        mk = _prepare_makefile(_prerequisites(xen), steps)
        mk_path = _temp_makefile(mk)
        try:
            r = _run(["make", "-f", "Makefile", "-f", mk_path, "xen-verify-prepare"], xen, left())
        finally:
            os.unlink(mk_path)
        if r.returncode:
            out = r.stdout + r.stderr
            done = re.findall(r"^xen-verify step (\d+)$", r.stdout, re.M)
            n = int(done[-1]) if done else 0
            step = " ".join(steps[n].split()) if n < len(steps) else "the header steps"
            return False, f"header step `{step}` failed: {_last_error(out)}"
    except subprocess.TimeoutExpired:
        return False, f"preparation took longer than {STEP_TIMEOUT} s"
    except OSError as e:
        return False, f"cannot run the tree's build: {e}"
    for must in ("include/xen/compile.h",):
        if not (xen / must).exists():
            return False, f"the header steps did not generate xen/{must}"
    if not list(xen.glob("include/asm*/asm-offsets.h")) and \
            not list(xen.glob("arch/*/include/asm/asm-offsets.h")):
        return False, "the header steps did not generate asm-offsets.h"
    return True, ""


def _temp_makefile(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".mk", prefix="xen-verify-", delete=False) as f:
        f.write(text)
        return f.name


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
                        tar.add(xen / rel, arcname=f"xen/{rel}", recursive=False)
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


def _restore(entry: Path, root: Path) -> None:
    with tarfile.open(entry / "generated.tar") as tar:
        members = tar.getmembers()
        for m in members:  # a regenerated file replaces what is there
            p = root / m.name
            if p.is_symlink() or p.is_file():
                p.unlink()
        safe_extractall(tar, root, label=f"cached build {entry.name}", members=members)


# --------------------------------------------------------------------------- unit commands

ROOT_TOKEN = "@ROOT@"
COMPILERS = re.compile(r"^(?:.*/)?(?:[\w.-]+-)?(?:gcc|cc|clang)(?:-[\d.]+)?$")


def _command_file(tree: PreparedTree, source: str) -> Path:
    assert tree.entry is not None
    return tree.entry / "commands" / (hashlib.sha1(source.encode()).hexdigest()[:20] + ".json")


def _cached_command(tree: PreparedTree, source: str) -> UnitCommand | None:
    if tree.entry is None:
        return None
    try:
        data = json.loads(_command_file(tree, source).read_text())
    except (OSError, ValueError):
        return None
    root = str(tree.root)
    return UnitCommand(source=source, argv=tuple(a.replace(ROOT_TOKEN, root) for a in data["argv"]),
                       cwd=Path(data["cwd"].replace(ROOT_TOKEN, root)))


def _record_command(tree: PreparedTree, source: str) -> UnitCommand | None:
    """``make -n V=1`` for the unit's object, in the prepared tree; stored in the entry."""
    cmd = unit_command_from_make(tree.root, source, tree.era)
    if cmd is None or tree.entry is None:
        return cmd
    root = str(tree.root)
    data = {"source": source, "argv": [a.replace(root, ROOT_TOKEN) for a in cmd.argv],
            "cwd": str(cmd.cwd).replace(root, ROOT_TOKEN)}
    path = _command_file(tree, source)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    return cmd


def unit_command_from_make(root: Path, source: str, era: str) -> UnitCommand | None:
    """The compiler command of ``source``'s object, as ``make -n V=1`` prints it."""
    if not source.startswith("xen/") or not source.endswith(".c"):
        return None
    xen = root / "xen"
    rel = source[len("xen/"):]
    obj = rel[:-2] + ".o"
    if era == "kbuild":
        argv = ["make", "-n", "-w", "V=1", obj]
        mk_path = None
    else:
        d, _, name = obj.rpartition("/")
        mk = ("xen-verify-unit:\n"
              f"\t$(MAKE) -f $(BASEDIR)/Rules.mk -C {d or '.'} {name}\n")
        mk_path = _temp_makefile(mk)
        argv = ["make", "-n", "-w", "-f", "Makefile", "-f", mk_path, "xen-verify-unit"]
    try:
        r = _run(argv, xen, 300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    finally:
        if mk_path:
            os.unlink(mk_path)
    return parse_compile_command(r.stdout, source, root)


def parse_compile_command(output: str, source: str, root: Path) -> UnitCommand | None:
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


def export_commit(co: Checkout, commit: str, dest: Path) -> Path:
    """``commit``'s build inputs (xen/, Config.mk, config/) into ``dest``, via git archive."""
    listed = subprocess.run(["git", "-C", str(co.path), "ls-tree", "--name-only", commit,
                             "--", *EXPORT_PATHS], capture_output=True, text=True, check=False)
    paths = [p for p in listed.stdout.splitlines() if p]
    if listed.returncode or "xen" not in paths:
        raise VerifyError(f"cannot read {commit[:12]}'s tree: {listed.stderr.strip() or 'no xen/'}")
    out = subprocess.run(["git", "-C", str(co.path), "archive", "--format=tar", commit, "--",
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


def prepared_pair(co: Checkout, cache: Path,
                  progress: Progress | None = None) -> tuple[PreparedTree, PreparedTree]:
    """base (co.commit, exported with git archive under cache/work) and patched (the
    worktree co.path as the patch left it); both prepared."""
    key = (str(Path(co.path).resolve()), co.commit)
    base_root = _BASES.get(key)
    if base_root is None or not (base_root / "xen").is_dir():
        base_root = _base_dir(co, cache)
        if not (base_root / "xen").is_dir():
            base_root.parent.mkdir(parents=True, exist_ok=True)
            export_commit(co, co.commit, base_root)
        _BASES[key] = base_root
    base = prepare_tree(base_root, cache, progress)
    patched = prepare_tree(Path(co.path), cache, progress)
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

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"

    def text(self) -> str:
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
            if opt.startswith("-Werror="):
                opt, kind = "-W" + opt[len("-Werror="):], "warning"
            out.append(Diagnostic(_tree_path(m.group("file"), cwd, root), int(m.group("line")),
                                  kind, m.group("msg"), opt, func))
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


def compile_unit(tree: PreparedTree, source: str, timeout: float = 300) -> CompileResult:
    """Compile ``source`` with the tree's own command, the object to a temporary file."""
    cmd = tree.unit_command(source)
    if cmd is None:
        raise VerifyError(f"the tree's build has no compiler command for {source}")
    with tempfile.TemporaryDirectory(prefix="xen-verify-cc-") as tmp:
        argv = cmd.compile_argv(Path(tmp) / "unit.o")
        t0 = time.monotonic()
        try:
            r = subprocess.run(argv, cwd=cmd.cwd, env=_make_env(), capture_output=True,
                               text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return CompileResult(source, -1, (), f"compiler timed out after {timeout:.0f} s",
                                 timeout, tuple(argv))
        secs = time.monotonic() - t0
    diags = parse_diagnostics(r.stderr, cmd.cwd, tree.root)
    return CompileResult(source, r.returncode, tuple(diags), r.stderr[-8000:], secs, tuple(argv))


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
    "compile_unit",
    "content_key",
    "export_commit",
    "new_diagnostics",
    "parse_compile_command",
    "parse_diagnostics",
    "prepare_tree",
    "prepared_pair",
]
