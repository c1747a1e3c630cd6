"""Trees: open or clone a Xen repository, resolve refs, check each ref out in its own worktree.

The user's repository is only ever read. Worktrees are made from a repository of the run's
own (under the cache's ``work/``, removed at exit) whose object store borrows, through
``objects/info/alternates``, a *shadow* repository's in the cache, which borrows the
user's: new objects (3-way blobs, the patched commit) and worktree bookkeeping land in
the run's repository, never in the user's ``.git`` nor in the cache.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import git

from verifier.model import Checkout, TreeKind, TreeSource, VerifyError

GIT_ENV = {
    # Never prompt for credentials or host keys: a URL that needs them is unreachable.
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_SSH_COMMAND": "ssh -oBatchMode=yes",
    "GIT_ASKPASS": "true",
}
IDENTITY = ("-c", "user.name=xen-verify", "-c", "user.email=xen-verify@localhost")
URL_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|[\w.-]+@[\w.-]+:)", re.IGNORECASE)
# Transports a --repo URL may use; git's ext:: / fd:: run commands and are never allowed.
URL_SCHEMES = ("https", "http", "git", "ssh", "file")


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """``--cache``, else ``$XEN_VERIFY_CACHE``, else ``$XDG_CACHE_HOME/xen-verify``."""
    if override:
        root = Path(override)
    elif os.environ.get("XEN_VERIFY_CACHE"):
        root = Path(os.environ["XEN_VERIFY_CACHE"])
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "xen-verify"
    try:
        root = _expand(str(root), "--cache")
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VerifyError(f"cannot create cache directory {root}: {e.strerror}") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise VerifyError(f"cache directory {root} is not writable")
    return root.resolve()


def _expand(path: str, what: str) -> Path:
    """``~`` and ``~user`` expanded, or one line saying that user does not exist."""
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~nouser/...
        user = path[1:].split("/", 1)[0]
        raise VerifyError(f"{what} {path}: no user {user!r} to expand ~{user}") from None


MAX_TREE_FILE_BYTES = 32 << 20  # a source file larger than this is not read


def read_tree_file(path: Path) -> str:
    """A tree's source file as text, refusing what is not a regular file.

    Symlinks, FIFOs and devices (a patch could make one point at /dev/zero) are never
    followed or read; nor is a file over MAX_TREE_FILE_BYTES.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VerifyError(f"{path}: a symlink in the tree; not followed") from None
        raise
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise VerifyError(f"{path}: not a regular file in the tree; not read")
        data = f.read(MAX_TREE_FILE_BYTES + 1)
    if len(data) > MAX_TREE_FILE_BYTES:
        raise VerifyError(f"{path}: over {MAX_TREE_FILE_BYTES >> 20} MB; not read")
    return data.decode("utf-8", errors="replace")


def is_url(spec: str) -> bool:
    return bool(URL_RE.match(spec))


def _slug(text: str) -> str:
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", text.rstrip("/").rsplit("/", 1)[-1])[:40]
    return f"{tail}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def _git(repo: Path | str, *args: str, **kwargs: object) -> str:
    """Run git in ``repo`` (a git dir or work tree) and return stdout."""
    cmd = git.Git(str(repo))
    cmd.update_environment(**GIT_ENV)
    return cmd.execute(["git", *args], **kwargs)  # type: ignore[call-overload,no-any-return]


def _git_error(e: git.GitCommandError) -> str:
    """git's own last 'fatal:'/'error:' line, for a one-line message."""
    text = (e.stderr or "").strip().strip("'").strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        m = re.search(r"\b(?:fatal|error): (.*)", ln)
        if m:
            return m.group(1).strip().rstrip("'").strip()
    return lines[-1] if lines else str(e)


# --------------------------------------------------------------------------- opening trees


def open_local(path: str, cache: Path) -> TreeSource:
    """A clone or bare repository on disk, used read-only in place."""
    p = _expand(path, "--repo")
    if not p.exists():
        raise VerifyError(f"--repo {path}: no such directory")
    try:
        repo = git.Repo(p, search_parent_directories=False)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise VerifyError(f"--repo {path}: not a git repository") from None
    git_dir = Path(repo.common_dir).resolve()
    shadow = _shadow_for(git_dir, cache)
    return TreeSource(
        kind=TreeKind.GIT,
        location=path,
        git_dir=git_dir,
        worktree_repo=shadow,
        description=f"git {p.resolve()}",
    )


def _shadow_for(git_dir: Path, cache: Path) -> Path:
    """A bare repository in the cache that borrows ``git_dir``'s objects (created once)."""
    shadow = cache / "shadow" / f"{_slug(str(git_dir))}.git"
    objects = git_dir / "objects"
    if (shadow / "objects" / "info" / "alternates").is_file():
        return shadow
    shadow.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".shadow-", dir=shadow.parent))
    try:
        git.Repo.init(tmp, bare=True)
        (tmp / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        os.replace(tmp, shadow)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not shadow.exists():
            raise
    return shadow


def open_url(url: str, cache: Path, progress: Callable[[str], None] | None = None) -> TreeSource:
    """Clone ``url`` into the cache once (bare), fetch it on later runs."""
    dest = cache / "clones" / f"{_slug(url)}.git"
    dest.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    if dest.exists():
        if progress:
            progress(f"fetching {url}")
        try:
            _git(dest, "fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/heads/*",
                 "+refs/tags/*:refs/tags/*")
        except git.GitCommandError as e:
            notes.append(f"fetch failed, using the cached clone: {_git_error(e)}")
    else:
        if progress:
            progress(f"cloning {url} (once; later runs fetch)")
        tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=dest.parent))
        watcher = _CloneProgress(progress) if progress else None
        try:
            git.Repo.clone_from(url, tmp / "repo.git", bare=True, env=GIT_ENV, progress=watcher)
            os.replace(tmp / "repo.git", dest)
        except git.GitCommandError as e:
            # With a progress watcher git's stderr goes to it, not to the exception.
            lines = (watcher.error_lines if watcher else []) + [e.stderr or ""]
            reason = _git_error(git.GitCommandError(e.command, e.status, "\n".join(lines)))
            raise VerifyError(f"--repo {url}: cannot clone: {' '.join(reason.split())}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TreeSource(
        kind=TreeKind.URL,
        location=url,
        git_dir=dest,
        description=f"clone of {url}",
        notes=tuple(notes),
    )


class _CloneProgress(git.RemoteProgress):
    """git's clone progress as a line per stage and every 10 %, not a flood."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__()
        self.say = say
        self.last: tuple[int, int] = (-1, -1)

    def update(self, op_code: int, cur_count: float | str, max_count: float | str | None = None,
               message: str = "") -> None:
        stage = op_code & self.OP_MASK
        names = {self.COUNTING: "counting", self.COMPRESSING: "compressing",
                 self.RECEIVING: "receiving", self.RESOLVING: "resolving"}
        if stage not in names or not max_count:
            return
        tenth = int(10 * float(cur_count) / float(max_count))
        if (stage, tenth) != self.last:
            self.last = (stage, tenth)
            self.say(f"clone: {names[stage]} objects {tenth * 10}% {message}".rstrip())


def open_tree(spec: str, cache: Path, progress: Callable[[str], None] | None = None) -> TreeSource:
    """``--repo`` argument: a URL or a local path."""
    if spec.lower().startswith(("ext::", "fd::")):
        raise VerifyError(f"--repo {spec[:80]}: git's {spec.split(':', 1)[0]}:: transport runs "
                          "commands; not allowed")
    if is_url(spec) and not Path(spec).exists():
        scheme = spec.split("://", 1)[0].lower() if "://" in spec else "ssh"
        if scheme not in URL_SCHEMES:
            raise VerifyError(f"--repo {spec[:80]}: unsupported URL scheme {scheme}:// "
                              f"(use one of {', '.join(URL_SCHEMES)})")
        return open_url(spec, cache, progress)
    return open_local(spec, cache)


# --------------------------------------------------------------------------- refs


def resolve(source: TreeSource, ref: str) -> tuple[str, str]:
    """``ref`` (any rev expression) in the source repository's namespace -> (sha, subject)."""
    if not ref or ref.startswith("-") or "\n" in ref:
        raise VerifyError(f"--ref {ref!r}: not a revision")
    try:
        sha = _git(source.git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options",
                   f"{ref}^{{commit}}")
    except git.GitCommandError:
        raise VerifyError(f"--ref {ref}: unknown revision in {source.location}") from None
    subject = _git(source.git_dir, "log", "-1", "--format=%s", sha)
    return sha, subject


def mainline(source: TreeSource) -> str | None:
    """The branch upstream work lands on, for 'which commit introduced X' searches."""
    for name in ("master", "origin/master", "staging", "origin/staging", "main"):
        try:
            _git(source.git_dir, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}")
            return name
        except git.GitCommandError:
            continue
    return None


# --------------------------------------------------------------------------- worktrees


def _work_root(cache: Path) -> Path:
    root = cache / "work"
    root.mkdir(parents=True, exist_ok=True)
    _reap_stale(root)
    return root


def _reap_stale(root: Path) -> None:
    """Remove worktree folders left by runs that were killed outright (SIGKILL)."""
    for d in root.iterdir():
        m = re.match(r"^(\d+)-", d.name)
        if not m:
            continue
        pid = int(m.group(1))
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            continue


# Worktrees of finished checkouts, kept for the next checkout of the same repository in
# this process: switching one to another commit rewrites only the files that differ,
# where a fresh worktree of a Xen tree writes all ~3000 (seconds per ref). Removed at exit.
_PARKED: dict[Path, list[tuple[Path, Path]]] = {}  # repo -> [(base dir, worktree)]
_PARKED_LOCK = threading.Lock()


def _take_parked(repo: Path, work_root: Path) -> tuple[Path, Path] | None:
    with _PARKED_LOCK:
        spots = _PARKED.get(repo, [])
        for i, (base, _path) in enumerate(spots):
            if base.parent == work_root:
                return spots.pop(i)
    return None


def _switch(path: Path, sha: str) -> bool:
    """Point a parked worktree at ``sha``, leaving nothing of its last use behind."""
    try:
        _git(path, "checkout", "--quiet", "--force", "--detach", sha)
        _git(path, "clean", "-fdxq")
        return _git(path, "rev-parse", "HEAD") == sha
    except git.GitCommandError:
        return False


def _remove_worktree(repo: Path, base: Path, path: Path) -> None:
    with _signals_deferred():
        with contextlib.suppress(git.GitCommandError):
            _git(repo, "worktree", "remove", "--force", str(path))
        shutil.rmtree(base, ignore_errors=True)
        with contextlib.suppress(git.GitCommandError):
            _git(repo, "worktree", "prune")


# This process's own repository per (repository, work root): a bare one under work/
# whose object store borrows the repository's. Worktrees are added to it, so the objects
# a run writes (3-way blobs, the patched commit) and git's worktree bookkeeping never
# land in the cache's shadow (or a cached clone): a run leaves the cache as it found it,
# and runs at once never prune each other's worktrees. Removed with the parked worktrees.
_RUN_REPOS: dict[tuple[int, Path, Path], Path] = {}


def _run_repo(repo: Path, work_root: Path) -> Path:
    key = (os.getpid(), Path(repo), Path(work_root))
    with _PARKED_LOCK:
        known = _RUN_REPOS.get(key)
        if known is not None and (known / "objects" / "info" / "alternates").is_file():
            return known
        d = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-repo-", dir=work_root))
        try:
            git.Repo.init(d, bare=True)
            objects = Path(repo).resolve() / "objects"
            (d / "objects" / "info" / "alternates").write_text(f"{objects}\n")
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        _RUN_REPOS[key] = d
        return d


def forget_parked() -> None:
    """Drop this process's record of parked worktrees without removing them (a forked
    child: the worktrees belong to its parent)."""
    with _PARKED_LOCK:
        _PARKED.clear()
        _RUN_REPOS.clear()


def release_parked(*, final: bool = False) -> None:
    """Remove every parked worktree, and this process's repositories that no checkout
    still uses (``final``, at exit: all of them)."""
    with _PARKED_LOCK:
        spots = [(repo, b, p) for repo, lst in _PARKED.items() for b, p in lst]
        _PARKED.clear()
    for repo, base, path in spots:
        _remove_worktree(repo, base, path)
    with _PARKED_LOCK:
        for key, d in list(_RUN_REPOS.items()):
            if key[0] != os.getpid():
                continue
            in_use = (d / "worktrees").is_dir() and any((d / "worktrees").iterdir())
            if final or not in_use:
                del _RUN_REPOS[key]
                shutil.rmtree(d, ignore_errors=True)


atexit.register(release_parked, final=True)


@contextlib.contextmanager
def checkout(source: TreeSource, ref: str, cache: Path) -> Iterator[Checkout]:
    """Check ``ref`` out in a worktree of its own while the block runs.

    A normal exit parks the worktree for the next checkout of the same repository; an
    error or Ctrl-C removes it at once.
    """
    sha, subject = resolve(source, ref)
    root = _work_root(cache)
    repo = _run_repo(source.worktree_repo or source.git_dir, root)
    spot = _take_parked(repo, root)
    if spot is not None and not _switch(spot[1], sha):
        _remove_worktree(repo, *spot)
        spot = None
    if spot is None:
        base = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root))
        path = base / "tree"
        try:
            _git(repo, "worktree", "add", "--quiet", "--detach", str(path), sha)
        except git.GitCommandError as e:
            shutil.rmtree(base, ignore_errors=True)
            raise VerifyError(
                f"--ref {ref}: cannot check out {sha[:12]}: {_git_error(e)}") from None
        except BaseException:  # SIGTERM or Ctrl-C while git adds it: nothing is left
            _remove_worktree(repo, base, path)
            raise
        spot = (base, path)
    finished = False
    try:
        yield Checkout(source=source, ref=ref, commit=sha, subject=subject, path=spot[1])
        finished = True
    finally:
        if finished and spot[0].is_dir():
            with _PARKED_LOCK:
                _PARKED.setdefault(repo, []).append(spot)
        else:
            _remove_worktree(repo, *spot)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Let clean-up finish even if Ctrl-C is pressed again."""
    old = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def commit_worktree(path: Path, message: str) -> str:
    """Commit everything in a worktree (the patched tree) and return the sha."""
    _git(path, "add", "-A")
    # Dated as its parent: the same patch on the same base is the same commit, so a run
    # repeated on one cache writes nothing new into it.
    when = _git(path, "log", "-1", "--format=%cI", "HEAD")
    env = {"GIT_AUTHOR_DATE": when, "GIT_COMMITTER_DATE": when}
    _git(path, *IDENTITY, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", message,
         env={**os.environ, **GIT_ENV, **env})
    return _git(path, "rev-parse", "HEAD")


def reset_worktree(path: Path, commit: str = "HEAD") -> None:
    _git(path, "reset", "--quiet", "--hard", commit)
    _git(path, "clean", "-fdq")
