"""Shared fixtures: real Xen trees.

- Debian source packages (``@pytest.mark.debian``): downloaded through apt into a test
  cache once per machine (``$XEN_VERIFY_TEST_CACHE``, default
  ``$XDG_CACHE_HOME/xen-verify-tests``) and imported as git repositories by the tool
  itself. bookworm = Xen 4.17.5 (whole source package), bullseye = 4.14.6 (upstream
  tarball only: that is all the archive serves). What the tool itself already downloaded
  into its own cache (``$XEN_VERIFY_CACHE``, default ``$XDG_CACHE_HOME/xen-verify``: the
  README's first command fills it) is reused, read-only: the source files are hard-linked
  (or copied) and a suite's apt lists copied into the test cache before apt runs, so
  apt only fetches what changed since.
- Upstream history (``@pytest.mark.upstream``): a clone named by ``$XEN_GIT``; tests
  that need it skip with that reason when it is unset.

Tree fixtures yield a checked-out worktree made by ``verifier.tree.checkout``: the
same code path the tool uses. ``XEN_TREE_417``/``XEN_TREE_414``/``XEN_TREE_PRE``/
``XEN_TREE_SEED`` override them with an existing directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.model import TreeSource

ROOT = Path(__file__).resolve().parent.parent
SEED_PATCH = ROOT / "patches" / "m2p-strict-v1.patch"
SEED_PAGE = ROOT.parent / "shared" / "seeds" / "000_21dd90f275e05086.txt"
PRE_FIX = "be05b5385f^"  # upstream master just before the committed fix
FIX = "be05b5385f"  # the committed fix (v2)


@pytest.fixture(scope="session")
def test_cache() -> Path:
    env = os.environ.get("XEN_VERIFY_TEST_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "xen-verify-tests"
    root.mkdir(parents=True, exist_ok=True)
    _reuse_tool_downloads(root)
    return root


def _need_apt() -> None:
    if not shutil.which("apt-get"):
        pytest.skip("apt-get not available: Debian source trees cannot be fetched")
    if not Path("/usr/share/keyrings/debian-archive-keyring.gpg").exists():
        pytest.skip("Debian's archive keyring is missing (apt-get install debian-archive-keyring)")


def _tool_cache() -> Path | None:
    """The tool's own default cache (``verifier.tree.cache_root`` without creating it)."""
    env = os.environ.get("XEN_VERIFY_CACHE")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        root = Path(xdg) / "xen-verify"
    return root if root.is_dir() else None


def _place(src: Path, dest: Path) -> None:
    """``src`` at ``dest`` (a hard link, else a copy), atomically; never writes ``src``."""
    tmp = dest.with_name(f".tmp-seed-{os.getpid()}-{dest.name}")
    try:
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or a file of another user
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    except OSError:
        pass  # reuse is an optimisation: the tool downloads what is missing
    finally:
        tmp.unlink(missing_ok=True)


def _reuse_tool_downloads(test_cache: Path) -> None:
    """Seed the test cache with the Debian downloads already in the tool's cache.

    The tool checks every source file against the package's checksums before use and
    replaces (never rewrites) files, so a shared inode is never changed; apt lists are
    copied, once per suite, into a state directory that is renamed into place whole.
    """
    tool = _tool_cache()
    if tool is None or tool.resolve() == test_cache.resolve():
        return
    files = tool / "debian" / "files"
    if files.is_dir():
        dest = test_cache / "debian" / "files"
        dest.mkdir(parents=True, exist_ok=True)
        for f in files.iterdir():
            if f.is_file() and not f.name.startswith(".") and not (dest / f.name).exists():
                _place(f, dest / f.name)
    apt = tool / "apt"
    for lists in sorted(apt.glob("*/lists")) if apt.is_dir() else ():
        suite = lists.parent.name
        state = test_cache / "apt" / suite
        if suite.startswith(".") or not lists.is_dir() or state.exists():
            continue
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-seed-{suite}-", dir=state.parent))
        try:
            shutil.copytree(lists, tmp / "lists", ignore=shutil.ignore_patterns("lock", "partial"))
            os.rename(tmp, state)  # fails if another session made the state meanwhile
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def debian_bookworm(test_cache: Path) -> TreeSource:
    _need_apt()
    from verifier.debian import import_debian

    return import_debian("bookworm", test_cache)


@pytest.fixture(scope="session")
def debian_bullseye(test_cache: Path) -> TreeSource:
    _need_apt()
    from verifier.debian import import_debian

    return import_debian("bullseye", test_cache)


def _tree(source: TreeSource, ref: str, cache: Path) -> Iterator[Path]:
    from verifier.tree import checkout

    with checkout(source, ref, cache) as co:
        yield co.path


@pytest.fixture(scope="session")
def xen_tree_417(debian_bookworm: TreeSource, test_cache: Path) -> Iterator[Path]:
    if os.environ.get("XEN_TREE_417"):
        yield Path(os.environ["XEN_TREE_417"])
        return
    yield from _tree(debian_bookworm, debian_bookworm.default_ref, test_cache)


@pytest.fixture(scope="session")
def xen_tree_414(debian_bullseye: TreeSource, test_cache: Path) -> Iterator[Path]:
    if os.environ.get("XEN_TREE_414"):
        yield Path(os.environ["XEN_TREE_414"])
        return
    yield from _tree(debian_bullseye, debian_bullseye.default_ref, test_cache)


@pytest.fixture(scope="session")
def xen_git(test_cache: Path) -> TreeSource:
    path = os.environ.get("XEN_GIT")
    if not path:
        pytest.skip("XEN_GIT is not set: no upstream Xen history (set it to a clone's path)")
    from verifier.tree import open_tree

    return open_tree(path, test_cache)


@pytest.fixture(scope="session")
def upstream_tree(xen_git: TreeSource, test_cache: Path):
    """Factory: ``upstream_tree(ref)`` -> a worktree path for the session."""
    from contextlib import ExitStack

    from verifier.tree import checkout

    stack = ExitStack()
    made: dict[str, Path] = {}

    def get(ref: str) -> Path:
        if ref not in made:
            made[ref] = stack.enter_context(checkout(xen_git, ref, test_cache)).path
        return made[ref]

    with stack:
        yield get


@pytest.fixture(scope="session")
def xen_tree_pre(request: pytest.FixtureRequest) -> Path:
    if os.environ.get("XEN_TREE_PRE"):
        return Path(os.environ["XEN_TREE_PRE"])
    return request.getfixturevalue("upstream_tree")(PRE_FIX)


@pytest.fixture(scope="session")
def xen_tree_46(request: pytest.FixtureRequest) -> Path:
    """stable-4.6: the fix as backported (cf5273420a), bool_t and unsigned long mfns."""
    if os.environ.get("XEN_TREE_46"):
        return Path(os.environ["XEN_TREE_46"])
    return request.getfixturevalue("upstream_tree")("stable-4.6")


@pytest.fixture(scope="session")
def xen_tree_seed(request: pytest.FixtureRequest, test_cache: Path) -> Iterator[Path]:
    """Upstream just before the fix, with the seed (v1) applied by the tool."""
    if os.environ.get("XEN_TREE_SEED"):
        yield Path(os.environ["XEN_TREE_SEED"])
        return
    xen_git = request.getfixturevalue("xen_git")
    from verifier.apply import apply_series
    from verifier.patch import load_series
    from verifier.tree import checkout

    with checkout(xen_git, PRE_FIX, test_cache) as co:
        result = apply_series(load_series([str(SEED_PATCH)]), co)
        assert result.patched_commit, result.detail
        yield co.path
