"""Trees: the user's repository is only read; worktrees never outlive a run."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests import toyrepo
from verifier.model import TreeKind, VerifyError
from verifier.tree import checkout, commit_worktree, open_tree, release_parked, resolve


def snapshot(git_dir: Path) -> dict[str, str]:
    """Every file under a .git with its content hash: any write shows."""
    out = {}
    for p in sorted(git_dir.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(git_dir))] = hashlib.sha1(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def toy(tmp_path: Path) -> tuple[Path, Path]:
    repo, _ = toyrepo.build(tmp_path)
    return repo, tmp_path / "cache"


def test_local_repo_is_never_written(toy):
    repo, cache = toy
    before = snapshot(repo / ".git")
    head_before = toyrepo.git(repo, "rev-parse", "HEAD")
    source = open_tree(str(repo), cache)
    assert source.kind is TreeKind.GIT
    with checkout(source, "written-on~0", cache) as co:
        (co.path / "hv/mm.c").write_text("changed\n")
        commit_worktree(co.path, "a commit in the worktree")
    assert snapshot(repo / ".git") == before
    assert toyrepo.git(repo, "rev-parse", "HEAD") == head_before
    assert toyrepo.git(repo, "status", "--porcelain") == ""


def test_worktree_removed_on_interrupt(toy):
    repo, cache = toy
    source = open_tree(str(repo), cache)
    seen = None
    with pytest.raises(KeyboardInterrupt), checkout(source, "master", cache) as co:
        seen = co.path
        assert (co.path / "hv/mm.c").is_file()
        raise KeyboardInterrupt
    assert seen is not None and not seen.exists()
    # what is left is this process's own repository, removed with the parked worktrees
    (left,) = (cache / "work").iterdir()
    assert left.name.startswith(f"{os.getpid()}-repo-")
    assert str(seen) not in toyrepo.git(left, "worktree", "list", "--porcelain")
    release_parked()
    assert not any((cache / "work").iterdir())
    # the cache's shadow repository never held the worktree, nor an object of the run
    assert not (source.worktree_repo / "worktrees").exists()


def test_a_run_writes_no_object_into_the_cache(toy):
    repo, cache = toy
    source = open_tree(str(repo), cache)
    shadow_before = snapshot(source.worktree_repo)
    with checkout(source, "written-on~0", cache) as co:
        (co.path / "hv/mm.c").write_text("changed by a patch\n")
        sha = commit_worktree(co.path, "the patched tree")
        assert toyrepo.git(co.path, "cat-file", "-t", sha) == "commit"
    release_parked()
    assert snapshot(source.worktree_repo) == shadow_before
    assert not any((cache / "work").iterdir())


def test_stale_worktree_of_a_killed_run_is_reaped(toy):
    repo, cache = toy
    source = open_tree(str(repo), cache)
    stale = cache / "work" / "999999999-dead"
    stale.mkdir(parents=True)
    with checkout(source, "master", cache):
        pass
    assert not stale.exists()


def test_refs_resolve_in_the_source_namespace(toy):
    repo, cache = toy
    source = open_tree(str(repo), cache)
    sha, subject = resolve(source, "master^")
    assert sha == toyrepo.git(repo, "rev-parse", "master^")
    assert subject == "hv: add frob_widget"
    for bad in ("no-such-branch", "--output=/tmp/x", "master^^^^^^^^^^"):
        with pytest.raises(VerifyError, match="--ref"):
            resolve(source, bad)


def test_url_is_cloned_once_then_fetched(toy):
    repo, cache = toy
    url = f"file://{repo}"
    first = open_tree(url, cache)
    assert first.kind is TreeKind.URL and first.git_dir.is_relative_to(cache)
    toyrepo.git(repo, "branch", "later", "master")
    second = open_tree(url, cache)
    assert second.git_dir == first.git_dir
    assert resolve(second, "later")[0] == toyrepo.git(repo, "rev-parse", "master")


def test_unreachable_url_is_one_line_and_leaves_no_clone(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(VerifyError) as e:
        open_tree("http://127.0.0.1:9/xen.git", cache)
    assert "\n" not in str(e.value) and "cannot clone" in str(e.value)
    assert not any(p.suffix == ".git" for p in (cache / "clones").iterdir())


def test_not_a_repository(tmp_path):
    with pytest.raises(VerifyError, match="not a git repository"):
        open_tree(str(tmp_path), tmp_path / "cache")
    with pytest.raises(VerifyError, match="no such directory"):
        open_tree(str(tmp_path / "absent"), tmp_path / "cache")


def test_bare_mirror_works_in_place(toy, tmp_path):
    repo, cache = toy
    bare = tmp_path / "mirror.git"
    toyrepo.git(tmp_path, "clone", "-q", "--mirror", str(repo), str(bare))
    before = snapshot(bare)
    source = open_tree(str(bare), cache)
    with checkout(source, "clash", cache) as co:
        assert "value | 1" in (co.path / "hv/mm.c").read_text()
    assert snapshot(bare) == before
