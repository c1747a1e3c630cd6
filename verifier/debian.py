"""Debian Xen source packages as a tree kind.

``import_debian(suite, cache)`` downloads the ``xen`` source package of a Debian suite
with apt, using a private apt state under ``cache/apt/<suite>/`` (the system's apt
configuration, lists and cache are never touched), and imports it into a cached git
repository ``cache/debian/<suite>/<version>.git``:

- one commit with the upstream tarball's contents, tagged ``upstream/<upstream-version>``;
- then, where the Debian tarball was served, one commit per quilt patch in
  ``debian/patches/series`` order, the tip tagged ``debian/<version>``.

``$XEN_VERIFY_DEBIAN_MIRROR`` replaces ``http://deb.debian.org/debian``. Without network, a
cached import is used (with a note saying so). ``stats`` counts list refreshes, downloads and
imports in this process.

Tag names follow DEP-14 (``~`` -> ``_``, ``:`` -> ``%``). Identities and dates are fixed, so
the same package always imports to the same commits. A repository is built in a temporary
directory and renamed into place only when complete; a lock file serialises runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import git
from debian import deb822
from debian.debian_support import Version

from verifier.archive import safe_extractall
from verifier.model import TreeKind, TreeSource, VerifyError

PACKAGE = "xen"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
IDENTITY = ("xen-verify", "xen-verify@localhost")
FIXED_DATE = "2000-01-01T00:00:00+0000"  # every import commit: reproducible ids
META = "xen-verify-import.json"  # written into the imported git dir
IMPORT_FORMAT = 1  # bump when the import layout changes: older imports are redone
APT_TIMEOUT = 1800

SUITE_RE = re.compile(r"^[a-z][a-z0-9.-]{0,63}$")

# Counters tests (and curious callers) read: apt list refreshes, package downloads, imports.
stats: Counter[str] = Counter()
# apt states whose lists were refreshed in this process: key -> warning (None: refreshed).
_refreshed: dict[tuple[str, str], str | None] = {}

Progress = Callable[[str], None]


# --------------------------------------------------------------------------- suite


def default_suite(os_release: Path | None = None) -> str:
    """The running system's Debian codename (``VERSION_CODENAME`` in os-release)."""
    paths = [os_release] if os_release else [Path("/etc/os-release"), Path("/usr/lib/os-release")]
    fields: dict[str, str] = {}
    for p in paths:
        try:
            text = p.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.lstrip().startswith("#"):
                fields[key.strip()] = value.strip().strip("'\"")
        break
    else:
        raise VerifyError("no /etc/os-release: cannot tell the Debian suite; "
                          "name one (--debian SUITE)")
    ident = fields.get("ID", "").lower()
    like = fields.get("ID_LIKE", "").lower().split()
    name = fields.get("PRETTY_NAME") or ident or "this system"
    if fields.get("DEBIAN_CODENAME"):  # derivatives that say which Debian they follow
        return fields["DEBIAN_CODENAME"]
    if ident != "debian" and ("debian" not in like or ident == "ubuntu" or "ubuntu" in like):
        raise VerifyError(f"{name} is not Debian: name a Debian suite (--debian SUITE)")
    codename = fields.get("VERSION_CODENAME", "")
    if not codename:
        raise VerifyError(f"{name} names no VERSION_CODENAME: name a Debian suite (--debian SUITE)")
    return codename


def dep14(version: str) -> str:
    """A Debian version as a git ref component (DEP-14: ``~`` -> ``_``, ``:`` -> ``%``)."""
    v = version.replace("~", "_").replace(":", "%")
    v = v.replace("..", ".#.")
    if v.endswith(".") or v.endswith(".lock"):
        v += "#"
    return v


# --------------------------------------------------------------------------- apt


@dataclass(frozen=True)
class SourceFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class SourceRecord:
    """One ``Package: xen`` paragraph of ``apt-cache showsrc``."""

    version: str
    format: str
    files: tuple[SourceFile, ...]

    @property
    def upstream_version(self) -> str:
        return Version(self.version).upstream_version or self.version

    def file(self, pattern: str) -> SourceFile | None:
        for f in self.files:
            if re.search(pattern, f.name):
                return f
        return None

    @property
    def orig(self) -> SourceFile | None:
        return self.file(r"\.orig\.tar\.[a-z0-9]+$")

    @property
    def debian(self) -> SourceFile | None:
        return self.file(r"\.debian\.tar\.[a-z0-9]+$")

    @property
    def dsc(self) -> SourceFile | None:
        return self.file(r"\.dsc$")


def parse_showsrc(text: str) -> list[SourceRecord]:
    """``apt-cache showsrc`` output -> the xen records (highest version first)."""
    records = []
    for para in deb822.Sources.iter_paragraphs(io.StringIO(text), use_apt_pkg=False):
        if para.get("Package") != PACKAGE or not para.get("Version"):
            continue
        files = tuple(
            SourceFile(f["name"], int(f["size"]), f["sha256"].lower())
            for f in para.get("Checksums-Sha256", [])
        )
        records.append(SourceRecord(para["Version"], para.get("Format", ""), files))
    records.sort(key=lambda r: Version(r.version), reverse=True)
    return records


class _Apt:
    """apt-get/apt-cache with a private state, lists and cache for one suite."""

    def __init__(self, cache: Path, suite: str) -> None:
        self.suite = suite
        self.mirror = os.environ.get("XEN_VERIFY_DEBIAN_MIRROR", DEFAULT_MIRROR).rstrip("/")
        self.state = cache / "apt" / suite
        self.sources = (
            f"deb-src [signed-by={KEYRING}] {self.mirror} {suite} main\n"
        )

    def setup(self) -> None:
        for sub in ("lists/partial", "cache/archives/partial", "etc/sources.list.d",
                    "etc/preferences.d"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        src = self.state / "etc" / "sources.list"
        if not src.is_file() or src.read_text() != self.sources:
            src.write_text(self.sources)

    def options(self) -> list[str]:
        s = self.state
        opts = {
            "Dir::State": s,
            "Dir::State::Lists": s / "lists",
            "Dir::Cache": s / "cache",
            "Dir::Etc::SourceList": s / "etc" / "sources.list",
            "Dir::Etc::SourceParts": s / "etc" / "sources.list.d",
            "Dir::Etc::Preferences": s / "etc" / "preferences.d",
            "Dir::Etc::PreferencesParts": s / "etc" / "preferences.d",
            "Debug::NoLocking": "1",
        }
        if os.geteuid() == 0:
            # apt drops to _apt for downloads, which cannot write into our cache.
            opts["APT::Sandbox::User"] = "root"
        out: list[str] = []
        for k, v in opts.items():
            out += ["-o", f"{k}={v}"]
        return out

    def run(self, tool: str, *args: str,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        exe = shutil.which(tool)
        if not exe:
            raise VerifyError(f"{tool} not found: Debian source packages need apt")
        env = dict(os.environ, LC_ALL="C", LANG="C", LANGUAGE="C")
        try:
            return subprocess.run(
                [exe, *self.options(), *args], cwd=cwd, env=env, capture_output=True,
                text=True, timeout=APT_TIMEOUT, stdin=subprocess.DEVNULL, check=False,
            )
        except subprocess.TimeoutExpired:
            raise VerifyError(f"{tool} {args[0]} took over {APT_TIMEOUT}s: giving up") from None

    def refresh(self, progress: Progress | None) -> str | None:
        """``apt-get update`` once per process. Returns apt's warning when it could not."""
        key = (str(self.state), self.sources)
        if key in _refreshed:
            return _refreshed[key]
        if not KEYRING.is_file():
            raise VerifyError(f"{KEYRING} is missing: install debian-archive-keyring")
        self.setup()
        _say(progress, f"refreshing Debian {self.suite} source lists")
        stats["updates"] += 1
        proc = self.run("apt-get", "-q", "update")
        text = proc.stdout + "\n" + proc.stderr
        if proc.returncode != 0:
            line = apt_error(text)
            if "does not have a Release file" in text or "404" in line:
                shutil.rmtree(self.state, ignore_errors=True)
                raise VerifyError(f"unknown Debian suite {self.suite!r}: {line}")
            raise VerifyError(f"apt-get update failed for Debian {self.suite}: {line}")
        warning = None
        if re.search(r"^(W|E): Failed to fetch", text, re.M):
            warning = apt_error(text, prefer="W: Failed to fetch")
        _refreshed[key] = warning
        return warning

    def showsrc(self) -> list[SourceRecord]:
        if not (self.state / "lists").is_dir():
            return []
        proc = self.run("apt-cache", "showsrc", PACKAGE)
        if proc.returncode != 0:
            return []
        return parse_showsrc(proc.stdout)

    def download(self, version: str, dest: Path) -> str:
        """``apt-get source --download-only xen=VERSION`` into ``dest``; apt's error line."""
        proc = self.run("apt-get", "-q", "source", "--download-only", f"{PACKAGE}={version}",
                        cwd=dest)
        if proc.returncode == 0:
            return ""
        return apt_error(proc.stdout + "\n" + proc.stderr, prefer="E: Failed to fetch")


def apt_error(text: str, prefer: str = "") -> str:
    """apt's most telling line: ``prefer``-prefixed, else the first ``E:``, else ``W:``."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for pick in (prefer, "E:", "W:", "Err:"):
        if not pick:
            continue
        for ln in lines:
            if ln.startswith(pick):
                ln = ln.split(":", 1)[1].strip() if pick in ("E:", "W:") else ln
                ln = re.sub(r"^[EW]: ", "", ln)
                return " ".join(re.sub(r"\s*\[IP: [^]]*\]", "", ln).split())
    return lines[-1] if lines else "no output"


# --------------------------------------------------------------------------- quilt


def parse_series(text: str) -> list[tuple[str, int]]:
    """``debian/patches/series`` -> [(patch name, strip level)], comments dropped."""
    out = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        name, *opts = line.split()
        strip = 1
        for i, opt in enumerate(opts):
            m = re.fullmatch(r"-p(\d+)", opt)
            if m:
                strip = int(m.group(1))
            elif opt == "-p" and i + 1 < len(opts) and opts[i + 1].isdigit():
                strip = int(opts[i + 1])
        out.append((name, strip))
    return out


def patch_subject(text: str, fallback: str) -> str:
    """A quilt patch's one-line description: DEP-3 ``Description:``/``Subject:`` header."""
    header: list[str] = []
    for line in text.splitlines():
        if line.startswith(("---", "diff ", "Index: ", "+++ ", "===")):
            break
        header.append(line)
    for field in ("Subject", "Description"):
        for i, line in enumerate(header):
            m = re.match(rf"^{field}:\s*(.*)$", line, re.IGNORECASE)
            if not m:
                continue
            value = m.group(1).strip()
            if field == "Subject":  # RFC 822 folding
                for cont in header[i + 1:]:
                    if not cont[:1].isspace() or not cont.strip():
                        break
                    value += " " + cont.strip()
                value = re.sub(r"^(\[[^]]*\]\s*)+", "", value).strip()
            elif not value:  # DEP-3 allows the synopsis on the next line
                nxt = header[i + 1] if i + 1 < len(header) else ""
                value = nxt.strip() if nxt[:1].isspace() else ""
            if value:
                return value
    return fallback


# --------------------------------------------------------------------------- import


def _say(progress: Progress | None, message: str) -> None:
    if progress:
        progress(message)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _reap(directory: Path) -> None:
    """Remove temporary directories of runs that died (the caller holds the lock)."""
    if not directory.is_dir():
        return
    for d in directory.iterdir():
        if d.name.startswith(".tmp-"):
            shutil.rmtree(d, ignore_errors=True)


def _verified(path: Path, f: SourceFile) -> bool:
    return path.is_file() and path.stat().st_size == f.size and _sha256(path) == f.sha256


def _fetch(apt: _Apt, rec: SourceRecord, files_dir: Path,
           progress: Progress | None) -> tuple[dict[str, Path], str]:
    """The record's files, verified, in ``files_dir`` -> ({name: path}, apt's error line)."""
    files_dir.mkdir(parents=True, exist_ok=True)
    have = {f.name: files_dir / f.name for f in rec.files if _verified(files_dir / f.name, f)}
    if len(have) == len(rec.files):
        return have, ""
    _say(progress, f"downloading xen {rec.version} source from Debian {apt.suite}")
    stats["downloads"] += 1
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-dl-", dir=files_dir))
    try:
        for name, path in have.items():
            shutil.copy2(path, tmp / name)  # apt skips files already present and correct
        error = apt.download(rec.version, tmp)
        for f in rec.files:
            got = tmp / f.name
            if f.name in have or not got.is_file():
                continue
            digest = _sha256(got)
            if got.stat().st_size != f.size or digest != f.sha256:
                raise VerifyError(f"checksum mismatch for {f.name}: expected sha256 {f.sha256}, "
                                  f"got {digest}")
            os.replace(got, files_dir / f.name)
            have[f.name] = files_dir / f.name
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return have, error


def _git_env(git_dir: Path, work: Path, index: Path) -> dict[str, str]:
    name, email = IDENTITY
    return {
        "GIT_DIR": str(git_dir),
        "GIT_WORK_TREE": str(work),
        "GIT_INDEX_FILE": str(index),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
        "GIT_AUTHOR_DATE": FIXED_DATE,
        "GIT_COMMITTER_DATE": FIXED_DATE,
        "LC_ALL": "C",
    }


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return "" if name == "." else name


def _extract(tarball: Path, dest: Path, strip_top: bool) -> None:
    """Unpack ``tarball`` into ``dest``, dropping its single top-level directory."""
    with tarfile.open(tarball) as tar:
        members = tar.getmembers()
        prefix = ""
        if strip_top:
            tops = {_norm(m.name).split("/", 1)[0] for m in members if _norm(m.name)}
            if len(tops) != 1:
                raise VerifyError(f"{tarball.name}: expected one top-level directory, "
                                  f"found {len(tops)}")
            prefix = tops.pop() + "/"
        keep = []
        for m in members:
            name = _norm(m.name)
            if strip_top:
                if not name.startswith(prefix):
                    continue  # the top directory itself
                name = name[len(prefix):]
                if m.islnk():  # hard links name their target by archive path too
                    target = _norm(m.linkname)
                    m.linkname = target[len(prefix):] if target.startswith(prefix) else target
            if not name:
                continue
            m.name = name
            keep.append(m)
        safe_extractall(tar, dest, members=keep, label=tarball.name)


def _commit(g: git.Git, env: dict[str, str], message: str) -> str:
    g.execute(["git", "commit", "-q", "--no-verify", "--allow-empty", "-m", message], env=env)
    return str(g.execute(["git", "rev-parse", "HEAD"], env=env)).strip()


def _import(rec: SourceRecord, files: dict[str, Path], dest: Path,
            progress: Progress | None) -> dict[str, object]:
    """Build the repository in a temporary directory next to ``dest``; rename it into place."""
    orig = rec.orig
    assert orig is not None and orig.name in files
    deb = rec.debian if rec.debian and rec.debian.name in files else None
    notes: list[str] = []
    stats["imports"] += 1
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
    try:
        git_dir, work, index = tmp / "repo.git", tmp / "work", tmp / "index"
        git.Repo.init(git_dir, bare=True).close()
        env = _git_env(git_dir, work, index)
        work.mkdir()
        g = git.Git(str(work))  # commands run in the work tree, GIT_DIR from env
        _say(progress, f"importing upstream tarball {orig.name}")
        _extract(files[orig.name], work, strip_top=True)
        g.execute(["git", "add", "--all", "--force", "."], env=env)
        upstream = _commit(g, env, f"Import xen {rec.upstream_version} upstream tarball\n\n"
                                      f"{orig.name}\nsha256 {orig.sha256}\n")
        upstream_tag = f"upstream/{dep14(rec.upstream_version)}"
        g.execute(["git", "tag", upstream_tag, upstream], env=env)
        tip, tip_ref, applied, series_len = upstream, upstream_tag, 0, 0
        if deb is not None:
            series = _debian_series(files[deb.name], tmp / "debian-src")
            series_len = len(series or ())
            if series is None:
                notes.append(f"Debian {rec.version} has no debian/patches/series: "
                             "the tree is the upstream tarball as Debian ships it")
            elif series:
                _say(progress, f"applying {len(series)} Debian patches")
            for i, (name, strip, path) in enumerate(series or (), 1):
                failure = _apply_patch(g, env, path, strip) if path else "missing from the package"
                if failure:
                    notes.append(f"Debian patch {i}/{series_len} {name} does not apply "
                                 f"({failure}): the tree stops after patch {i - 1}")
                    break
                assert path is not None
                subject = patch_subject(path.read_text(errors="replace"), name)
                tip = _commit(g, env, f"{subject}\n\nDebian patch {i}/{series_len}: "
                                         f"debian/patches/{name}\n")
                applied += 1
            tip_ref = f"debian/{dep14(rec.version)}"
            g.execute(["git", "tag", tip_ref, tip], env=env)
        else:
            notes.append(f"Debian patches not served for {rec.version}: "
                         "tree is the upstream tarball only")
        g.execute(["git", "update-ref", "refs/heads/master", tip], env=env)
        _say(progress, "packing the imported repository")
        g.execute(["git", "repack", "-a", "-d", "-q"], env=env)
        g.execute(["git", "prune-packed"], env=env)
        meta: dict[str, object] = {
            "format": IMPORT_FORMAT,
            "package": PACKAGE,
            "version": rec.version,
            "upstream_version": rec.upstream_version,
            "upstream_tag": upstream_tag,
            "default_ref": tip_ref,
            "tip": tip,
            "patches_applied": applied,
            "series_length": series_len,
            "files": {f.name: f.sha256 for f in rec.files if f.name in files},
            "notes": notes,
        }
        (git_dir / META).write_text(json.dumps(meta, indent=2) + "\n")
        if dest.exists():  # an older import format or a broken import: replace it
            shutil.rmtree(dest)
        os.replace(git_dir, dest)
        return meta
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _debian_series(tarball: Path, dest: Path) -> list[tuple[str, int, Path | None]] | None:
    """The Debian tarball's quilt series -> [(name, strip level, path or None if absent)].

    None when the package has no series file.
    """
    dest.mkdir()
    _extract(tarball, dest, strip_top=False)
    patches = dest / "debian" / "patches"
    series = patches / "series"
    if not series.is_file():
        return None
    out: list[tuple[str, int, Path | None]] = []
    for name, strip in parse_series(series.read_text(errors="replace")):
        path = (patches / name).resolve()
        inside = path.is_relative_to(patches.resolve()) and path.is_file()
        out.append((name, strip, path if inside else None))
    return out


def _apply_patch(g: git.Git, env: dict[str, str], patch: Path, strip: int) -> str:
    """``git apply --index`` one quilt patch; '' when it applied, else git's error line."""
    try:
        g.execute(["git", "apply", "--index", f"-p{strip}", "--whitespace=nowarn",
                   "--allow-empty", str(patch)], env=env)
    except git.GitCommandError as e:
        return _git_line(e)[:200]
    return ""


def _git_line(e: git.GitCommandError) -> str:
    """git's first ``error:``/``fatal:`` line (else its last line)."""
    lines = [ln.strip() for ln in str(e.stderr or "").strip().strip("'").splitlines()
             if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "fatal:"))]
    return errors[0] if errors else (lines[-1] if lines else f"git exited {e.status}")


# --------------------------------------------------------------------------- public


def _source(suite: str, git_dir: Path, meta: dict[str, object],
            extra: list[str]) -> TreeSource:
    notes = [str(n) for n in meta.get("notes", []) or []]  # type: ignore[union-attr]
    return TreeSource(
        kind=TreeKind.DEBIAN,
        location=suite,
        git_dir=git_dir,
        has_history=False,
        description=f"Debian {suite} {PACKAGE} {meta['version']}",
        notes=tuple(extra + notes),
        default_ref=str(meta["default_ref"]),
    )


def _load(git_dir: Path) -> dict[str, object] | None:
    """The metadata of a complete import, or None when ``git_dir`` is not one."""
    try:
        meta = json.loads((git_dir / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != IMPORT_FORMAT:
        return None
    try:
        sha = git.Git(str(git_dir)).execute(
            ["git", "--git-dir", str(git_dir), "rev-parse", "--verify", "--quiet",
             f"{meta['default_ref']}^{{commit}}"])
    except (git.GitCommandError, KeyError):
        return None
    return meta if sha.strip() == meta.get("tip") else None


def _cached_imports(suite_dir: Path) -> list[tuple[Path, dict[str, object]]]:
    found = []
    if suite_dir.is_dir():
        for d in suite_dir.glob("*.git"):
            meta = _load(d)
            if meta:
                found.append((d, meta))
    found.sort(key=lambda x: Version(str(x[1]["version"])), reverse=True)
    return found


def import_debian(suite: str, cache_dir: Path,
                  progress: Progress | None = None) -> TreeSource:
    """The ``xen`` source package of Debian ``suite`` as a cached git repository."""
    if not SUITE_RE.match(suite or ""):
        raise VerifyError(f"--debian {suite!r}: not a Debian suite name (bookworm, trixie, ...)")
    cache_dir = Path(cache_dir)
    root = cache_dir / "debian"
    suite_dir = root / suite
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VerifyError(f"cannot create {suite_dir}: {e.strerror}") from None
    apt = _Apt(cache_dir, suite)
    with _locked(root / ".lock"):
        _reap(suite_dir)
        _reap(root / "files")
        try:
            warning = apt.refresh(progress)
        except VerifyError as e:
            cached = _cached_imports(suite_dir)
            if not cached:
                raise
            d, meta = cached[0]  # e.g. a suite since moved to archive.debian.org
            return _source(suite, d, meta, [
                f"{e}; using the cached import of {PACKAGE} {meta['version']}"])
        records = apt.showsrc()
        if not records:
            if warning:
                cached = _cached_imports(suite_dir)
                if cached:
                    d, meta = cached[0]
                    return _source(suite, d, meta, [
                        f"could not refresh the Debian {suite} lists ({warning}); "
                        f"using the cached import of {PACKAGE} {meta['version']}"])
                raise VerifyError(f"cannot reach the Debian archive for {suite}: {warning}")
            raise VerifyError(f"Debian {suite} has no {PACKAGE} source package")
        rec = records[0]
        extra = []
        if warning:
            extra.append(f"could not refresh the Debian {suite} lists ({warning}); "
                         f"using the lists of an earlier run")
        dest = suite_dir / f"{dep14(rec.version)}.git"
        meta = _load(dest)
        if meta:
            return _source(suite, dest, meta, extra)
        if rec.orig is None:
            raise VerifyError(f"Debian {suite} xen {rec.version} ({rec.format or 'unknown format'})"
                              " lists no upstream .orig tarball: not supported")
        suite_dir.mkdir(exist_ok=True)
        files, error = _fetch(apt, rec, root / "files", progress)
        if rec.orig.name not in files:
            if not files:
                raise VerifyError(f"Debian {suite} lists {PACKAGE} {rec.version} but its files are "
                                  f"not served here ({error or 'nothing arrived'})")
            raise VerifyError(f"Debian {suite} {PACKAGE} {rec.version}: upstream tarball "
                              f"{rec.orig.name} not served ({error or 'nothing arrived'})")
        try:
            meta = _import(rec, files, dest, progress)
        except git.GitCommandError as e:
            raise VerifyError(f"importing {PACKAGE} {rec.version} failed: {_git_line(e)}") from None
        except (OSError, tarfile.TarError, lzma.LZMAError, EOFError) as e:
            raise VerifyError(f"importing {PACKAGE} {rec.version} failed: {e}") from None
        return _source(suite, dest, meta, extra)


__all__ = ["SourceRecord", "default_suite", "dep14", "import_debian", "parse_series",
           "parse_showsrc", "patch_subject", "stats"]
