"""Debian Xen source packages imported as git repositories.

Tests marked ``debian`` download through apt for real (Debian's archive must be reachable);
the others build tiny packages of their own and need no network.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from verifier import debian
from verifier.debian import (
    SourceFile,
    SourceRecord,
    default_suite,
    dep14,
    import_debian,
    parse_series,
    parse_showsrc,
    patch_subject,
)
from verifier.model import TreeKind, TreeSource, VerifyError


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", "--git-dir", str(git_dir), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def need_apt() -> None:
    if not shutil.which("apt-get"):
        pytest.skip("apt-get not available: Debian source packages cannot be fetched")
    if not debian.KEYRING.is_file():
        pytest.skip(f"{debian.KEYRING} missing: install debian-archive-keyring")


@pytest.fixture(scope="session")
def debian_cache(test_cache: Path) -> Path:
    """The session's test cache (tests/conftest.py): one download per machine."""
    return test_cache


def _import_counted(suite: str, cache: Path) -> tuple[TreeSource, dict[str, int]]:
    need_apt()
    before = dict(debian.stats)
    source = import_debian(suite, cache)
    return source, {k: debian.stats[k] - before.get(k, 0) for k in debian.stats}


@pytest.fixture(scope="session")
def bookworm(debian_cache: Path) -> TreeSource:
    return _import_counted("bookworm", debian_cache)[0]


@pytest.fixture(scope="session")
def bullseye(debian_cache: Path) -> TreeSource:
    return _import_counted("bullseye", debian_cache)[0]


def served_file(cache: Path, suffix: str, version: str) -> Path | None:
    """A package file the archive served (kept, verified, in the cache)."""
    upstream = version.rsplit("-", 1)[0]
    for name in (f"xen_{version}{suffix}", f"xen_{upstream}{suffix}"):
        p = cache / "debian" / "files" / name
        if p.is_file():
            return p
    return None


def tar_series(debian_tar: Path) -> list[str]:
    """Patch names in debian/patches/series, read straight from the Debian tarball."""
    with tarfile.open(debian_tar) as tar:
        member = tar.extractfile("debian/patches/series")
        assert member is not None
        text = member.read().decode()
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip() if line.lstrip().startswith("#") else line.strip()
        if line:
            names.append(line.split()[0])
    return names


def version_of(source: TreeSource) -> str:
    return source.description.rsplit(" ", 1)[-1]


# --------------------------------------------------------------------------- real archive


@pytest.mark.debian
def test_bookworm_upstream_commit_then_one_commit_per_patch(bookworm, debian_cache):
    assert bookworm.kind is TreeKind.DEBIAN
    assert bookworm.location == "bookworm"
    assert bookworm.has_history is False
    version = version_of(bookworm)
    assert bookworm.description == f"Debian bookworm xen {version}"
    upstream = version.rsplit("-", 1)[0]
    gd = bookworm.git_dir

    debian_tar = served_file(debian_cache, ".debian.tar.xz", version)
    assert debian_tar is not None, "bookworm's Debian tarball was not kept in the cache"
    series = tar_series(debian_tar)
    assert series, "bookworm's series is empty: nothing to check"

    assert bookworm.default_ref == f"debian/{dep14(version)}"
    tags = git(gd, "tag").split()
    assert f"upstream/{dep14(upstream)}" in tags
    assert bookworm.default_ref in tags
    assert bookworm.notes == ()

    commits = git(gd, "rev-list", "--reverse", bookworm.default_ref).split()
    assert len(commits) == 1 + len(series)
    assert commits[0] == git(gd, "rev-parse", f"upstream/{dep14(upstream)}^{{commit}}")
    # One commit per patch, in series order, each naming its patch.
    for sha, name in zip(commits[1:], series, strict=True):
        body = git(gd, "log", "-1", "--format=%B", sha)
        assert f"debian/patches/{name}" in body
        assert git(gd, "log", "-1", "--format=%s", sha)  # a subject, never empty
    # The patches changed the tree.
    assert git(gd, "diff", "--stat", commits[0], commits[-1])

    mm = git(gd, "show", f"{bookworm.default_ref}:xen/arch/x86/mm.c")
    assert "fill_ro_mpt" in mm


@pytest.mark.debian
def test_bookworm_upstream_commit_is_the_whole_tarball(bookworm, debian_cache):
    version = version_of(bookworm)
    orig = served_file(debian_cache, ".orig.tar.xz", version)
    assert orig is not None
    with tarfile.open(orig) as tar:
        files = sorted(m.name.split("/", 1)[1] for m in tar.getmembers()
                       if not m.isdir() and "/" in m.name)
    upstream = f"upstream/{dep14(version.rsplit('-', 1)[0])}"
    tracked = sorted(git(bookworm.git_dir, "ls-tree", "-r", "--name-only", upstream).splitlines())
    # .gitignore'd files shipped in the tarball are in the commit too.
    assert tracked == files
    # Fixed identity and dates: the import is reproducible.
    ident = git(bookworm.git_dir, "log", "-1", "--format=%an <%ae> %at %cn %ct", upstream)
    assert ident == "xen-verify <xen-verify@localhost> 946684800 xen-verify 946684800"


@pytest.mark.debian
def test_bullseye_is_upstream_only_when_patches_are_not_served(bullseye, debian_cache):
    version = version_of(bullseye)
    upstream = version.rsplit("-", 1)[0]
    assert bullseye.kind is TreeKind.DEBIAN
    gd = bullseye.git_dir
    mm = git(gd, "show", f"{bullseye.default_ref}:xen/arch/x86/mm.c")
    assert "fill_ro_mpt" in mm
    if served_file(debian_cache, ".debian.tar.xz", version) is not None:
        # The archive served the Debian tarball here: the tree must be the patched one.
        assert bullseye.default_ref == f"debian/{dep14(version)}"
        assert not any("not served" in n for n in bullseye.notes)
        return
    assert bullseye.default_ref == f"upstream/{dep14(upstream)}"
    assert f"Debian patches not served for {version}: tree is the upstream tarball only" \
        in bullseye.notes
    assert git(gd, "rev-list", "--count", bullseye.default_ref) == "1"
    assert not [t for t in git(gd, "tag").split() if t.startswith("debian/")]


@pytest.mark.debian
def test_second_import_is_a_cache_hit(bookworm, debian_cache):
    meta = bookworm.git_dir / debian.META
    mtime = meta.stat().st_mtime_ns
    again, delta = _import_counted("bookworm", debian_cache)
    assert delta.get("downloads", 0) == 0
    assert delta.get("imports", 0) == 0
    assert delta.get("updates", 0) == 0  # lists are refreshed at most once per run
    assert again == bookworm
    assert meta.stat().st_mtime_ns == mtime


@pytest.mark.debian
def test_listed_but_not_served_is_an_error(debian_cache):
    need_apt()
    try:
        source = import_debian("trixie", debian_cache)
    except VerifyError as e:
        msg = str(e)
        assert "\n" not in msg
        assert msg.startswith("Debian trixie lists xen ")
        assert "not served here" in msg
        assert not list((debian_cache / "debian" / "trixie").glob("*.git"))
        return
    pytest.skip(f"trixie's xen is served here ({source.description}): nothing to refuse")


@pytest.mark.debian
def test_unknown_suite_is_an_error(debian_cache):
    need_apt()
    with pytest.raises(VerifyError, match=r"^unknown Debian suite 'nosuchsuite': .*Release"):
        import_debian("nosuchsuite", debian_cache)
    assert not (debian_cache / "apt" / "nosuchsuite").exists()
    assert not (debian_cache / "debian" / "nosuchsuite").exists()


@pytest.mark.debian
def test_suite_without_xen_is_an_error(debian_cache):
    need_apt()
    try:
        source = import_debian("bookworm-updates", debian_cache)
    except VerifyError as e:
        assert str(e) == "Debian bookworm-updates has no xen source package"
        return
    pytest.skip(f"bookworm-updates carries xen here ({source.description})")


@pytest.mark.debian
def test_refresh_failure_falls_back_to_a_cached_import(bookworm, tmp_path):
    cache = tmp_path / "cache"
    shutil.copytree(bookworm.git_dir, cache / "debian" / "nosuchsuite" / bookworm.git_dir.name,
                    symlinks=True)
    source = import_debian("nosuchsuite", cache)
    assert source.git_dir.parent == cache / "debian" / "nosuchsuite"
    [note] = source.notes
    assert note.startswith("unknown Debian suite 'nosuchsuite': ")
    assert note.endswith(f"; using the cached import of xen {version_of(bookworm)}")


@pytest.mark.debian
def test_interrupted_import_leaves_nothing_then_imports_the_same(bookworm, tmp_path):
    cache = tmp_path / "cache"

    def stop_at(text: str) -> Callable[[str], None]:
        def progress(message: str) -> None:
            if text in message:
                raise KeyboardInterrupt(message)
        return progress

    suite_dir = cache / "debian" / "bookworm"
    for point in ("importing upstream", "Debian patches", "packing"):
        with pytest.raises(KeyboardInterrupt):
            import_debian("bookworm", cache, stop_at(point))
        assert not list(suite_dir.glob("*.git")), f"a repository survived an interrupt at {point}"
        assert not list(suite_dir.glob(".tmp-*")), f"temporary files left at {point}"
    source = import_debian("bookworm", cache)
    assert source.default_ref == bookworm.default_ref
    tip = git(source.git_dir, "rev-parse", source.default_ref)
    assert tip == git(bookworm.git_dir, "rev-parse", bookworm.default_ref)  # reproducible


@pytest.mark.debian
def test_unreachable_archive_falls_back_to_the_cached_import(bookworm, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(bookworm.git_dir, cache / "debian" / "bookworm" / bookworm.git_dir.name,
                    symlinks=True)
    monkeypatch.setenv("XEN_VERIFY_DEBIAN_MIRROR", "http://deb.debian.invalid/debian")
    before = dict(debian.stats)
    source = import_debian("bookworm", cache)
    assert debian.stats["downloads"] == before.get("downloads", 0)
    assert debian.stats["imports"] == before.get("imports", 0)
    assert source.default_ref == bookworm.default_ref
    assert any(n.startswith("could not refresh the Debian bookworm lists") for n in source.notes)
    # No cached import for another suite: a one-line error naming apt's complaint.
    with pytest.raises(VerifyError, match=r"^cannot reach the Debian archive for bullseye: .*"):
        import_debian("bullseye", cache)


# --------------------------------------------------------------------------- no network


def test_bad_suite_names_are_refused(tmp_path):
    for bad in ("", "Bookworm", "../etc", "bookworm main", "-o", "a/b"):
        with pytest.raises(VerifyError, match="not a Debian suite name"):
            import_debian(bad, tmp_path)
    assert not (tmp_path / "apt").exists()


@pytest.mark.parametrize(("text", "expected"), [
    ('ID=debian\nVERSION_CODENAME=bookworm\n', "bookworm"),
    ('ID=raspbian\nID_LIKE=debian\nVERSION_CODENAME="bullseye"\n', "bullseye"),
    ('ID=linuxmint\nID_LIKE="ubuntu debian"\nVERSION_CODENAME=faye\nDEBIAN_CODENAME=bookworm\n',
     "bookworm"),
])
def test_default_suite(tmp_path, text, expected):
    p = tmp_path / "os-release"
    p.write_text(text)
    assert default_suite(p) == expected


@pytest.mark.parametrize("text", [
    'ID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=jammy\n',
    'ID=fedora\nVERSION_CODENAME=""\n',
    'ID=debian\n',
])
def test_default_suite_refuses_non_debian(tmp_path, text):
    p = tmp_path / "os-release"
    p.write_text(text)
    with pytest.raises(VerifyError, match="--debian SUITE"):
        default_suite(p)
    with pytest.raises(VerifyError, match="--debian SUITE"):
        default_suite(tmp_path / "absent")


def test_default_suite_of_this_machine():
    try:
        suite = default_suite()
    except VerifyError as e:
        assert "\n" not in str(e)
        return
    assert debian.SUITE_RE.match(suite)


def test_dep14():
    assert dep14("4.17.5+72-g01140da4e8-1") == "4.17.5+72-g01140da4e8-1"
    assert dep14("1:4.0~rc1-1") == "1%4.0_rc1-1"
    assert dep14("1..2") == "1.#.2"
    assert dep14("2.lock") == "2.lock#"


def test_parse_series():
    text = ("# a comment\n0001-a.patch\n\nsub/b.diff -p0\nc.patch   # trailing comment\n"
            "d.patch -p 2\n")
    assert parse_series(text) == [("0001-a.patch", 1), ("sub/b.diff", 0), ("c.patch", 1),
                                  ("d.patch", 2)]


def test_patch_subject():
    fmt = ("From: A <a@example.org>\nDate: Wed, 19 Sep 2018 16:45:49 +0100\n"
           "Subject: [PATCH 2/3] x86/mm: a long subject\n that is folded\n\nbody\n---\n"
           "diff --git a/f b/f\n")
    assert patch_subject(fmt, "f.patch") == "x86/mm: a long subject that is folded"
    dep3 = "Description: Remove static solaris support\n Longer text.\nAuthor: B\n---\n--- a/x\n"
    assert patch_subject(dep3, "f.patch") == "Remove static solaris support"
    bare = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n"
    assert patch_subject(bare, "config-prefix.diff") == "config-prefix.diff"
    # A Subject: line inside the diff is not a header.
    inside = "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+Subject: no\n"
    assert patch_subject(inside, "p.diff") == "p.diff"


SHOWSRC = """\
Package: xen
Version: 4.14.5-1
Format: 3.0 (quilt)
Checksums-Sha256:
 {a} 10 xen_4.14.5-1.dsc
 {b} 20 xen_4.14.5.orig.tar.xz

Package: xen
Version: 4.14.6-1
Format: 3.0 (quilt)
Checksums-Sha256:
 {A} 11 xen_4.14.6-1.dsc
 {B} 21 xen_4.14.6.orig.tar.xz
 {C} 31 xen_4.14.6-1.debian.tar.xz

Package: xen-other
Version: 9-1
"""


def test_parse_showsrc_takes_the_highest_version():
    text = SHOWSRC.format(a="1" * 64, b="2" * 64, A="A" * 64, B="b" * 64, C="c" * 64)
    recs = parse_showsrc(text)
    assert [r.version for r in recs] == ["4.14.6-1", "4.14.5-1"]
    top = recs[0]
    assert top.upstream_version == "4.14.6"
    assert top.orig == SourceFile("xen_4.14.6.orig.tar.xz", 21, "b" * 64)
    assert top.debian is not None and top.debian.size == 31
    assert top.dsc is not None and top.dsc.sha256 == "a" * 64  # lower-cased
    assert recs[1].debian is None


# ----------------------------------------------------------------- synthetic packages


def _tar(path: Path, entries: dict[str, str], mode: str = "w:xz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, text in entries.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


def _file(path: Path) -> SourceFile:
    return SourceFile(path.name, path.stat().st_size, debian._sha256(path))


PATCH_OK = """\
From: Someone <s@example.org>
Subject: [PATCH] Change the greeting

---
 hello.c | 2 +-
diff --git a/hello.c b/hello.c
--- a/hello.c
+++ b/hello.c
@@ -1,4 +1,4 @@
 int main(void)
 {
-    return 0;
+    return 1;
 }
"""

PATCH_P0 = """\
Description: Add a file, -p0 style
--- /dev/null
+++ new.txt
@@ -0,0 +1 @@
+new
"""

PATCH_BAD = """\
Subject: Does not apply
--- a/hello.c
+++ b/hello.c
@@ -1,4 +1,4 @@
 int main(void)
 {
-    return 42;
+    return 43;
 }
"""


def _package(tmp: Path, series: str, with_debian: bool = True) -> tuple[SourceRecord, dict]:
    orig = _tar(tmp / "xen_1.0.orig.tar.xz", {
        "xen-1.0/hello.c": "int main(void)\n{\n    return 0;\n}\n",
        "xen-1.0/.gitignore": "*.c\nbuild.sh\n",  # ignored files are still imported
        "xen-1.0/build.sh": "#!/bin/sh\n",
        "xen-1.0/sub/.hidden": "x\n",
    })
    files = {orig.name: orig}
    if with_debian:
        deb = _tar(tmp / "xen_1.0-1.debian.tar.xz", {
            "debian/patches/series": series,
            "debian/patches/ok.patch": PATCH_OK,
            "debian/patches/p0.patch": PATCH_P0,
            "debian/patches/bad.patch": PATCH_BAD,
        })
        files[deb.name] = deb
    rec = SourceRecord("1.0-1", "3.0 (quilt)", tuple(_file(p) for p in files.values()))
    return rec, files


def test_import_applies_the_series_and_stops_at_a_patch_that_fails(tmp_path):
    rec, files = _package(tmp_path, "ok.patch\np0.patch -p0\nbad.patch\n")
    dest = tmp_path / "cache" / "sid" / "1.0-1.git"
    dest.parent.mkdir(parents=True)
    messages: list[str] = []
    meta = debian._import(rec, files, dest, messages.append)
    assert dest.is_dir() and not list(dest.parent.glob(".tmp-*"))
    assert git(dest, "ls-tree", "-r", "--name-only", "upstream/1.0").split() == [
        ".gitignore", "build.sh", "hello.c", "sub/.hidden"]
    assert git(dest, "ls-tree", "upstream/1.0", "build.sh").startswith("100755")
    subjects = git(dest, "log", "--format=%s", "debian/1.0-1").splitlines()
    assert subjects == ["Add a file, -p0 style", "Change the greeting",
                        "Import xen 1.0 upstream tarball"]
    assert git(dest, "show", "debian/1.0-1:hello.c").count("return 1;") == 1
    assert git(dest, "show", "debian/1.0-1:new.txt") == "new"
    assert meta["default_ref"] == "debian/1.0-1"
    assert meta["patches_applied"] == 2 and meta["series_length"] == 3
    [note] = meta["notes"]
    assert note.startswith("Debian patch 3/3 bad.patch does not apply (")
    assert note.endswith("the tree stops after patch 2")
    assert any("importing upstream tarball" in m for m in messages)


def test_import_stops_at_a_patch_the_package_lacks(tmp_path):
    rec, files = _package(tmp_path, "ok.patch\n../../escape.patch\np0.patch -p0\n")
    meta = debian._import(rec, files, tmp_path / "1.0-1.git", None)
    assert meta["patches_applied"] == 1
    assert meta["notes"] == ["Debian patch 2/3 ../../escape.patch does not apply "
                             "(missing from the package): the tree stops after patch 1"]


def test_import_without_series_is_upstream_as_shipped(tmp_path):
    rec, files = _package(tmp_path, "")
    deb = _tar(tmp_path / "xen_1.0-1.debian.tar.xz", {"debian/changelog": "x\n"})
    files[deb.name] = deb
    meta = debian._import(rec, files, tmp_path / "1.0-1.git", None)
    assert meta["default_ref"] == "debian/1.0-1"
    assert meta["notes"] == ["Debian 1.0-1 has no debian/patches/series: "
                             "the tree is the upstream tarball as Debian ships it"]
    dest = tmp_path / "1.0-1.git"
    assert git(dest, "rev-parse", "debian/1.0-1") == git(dest, "rev-parse", "upstream/1.0")


def test_import_is_reproducible(tmp_path):
    rec, files = _package(tmp_path, "ok.patch\n")
    tips = []
    for n in (1, 2):
        dest = tmp_path / f"c{n}" / "1.0-1.git"
        dest.parent.mkdir()
        tips.append(debian._import(rec, files, dest, None)["tip"])
    assert tips[0] == tips[1]


def test_import_without_debian_tarball_is_upstream_only(tmp_path):
    rec, files = _package(tmp_path, "", with_debian=False)
    dest = tmp_path / "1.0-1.git"
    meta = debian._import(rec, files, dest, None)
    assert meta["default_ref"] == "upstream/1.0"
    assert meta["notes"] == ["Debian patches not served for 1.0-1: "
                             "tree is the upstream tarball only"]
    assert git(dest, "rev-list", "--count", "HEAD") == "1"


def test_unsafe_tarball_is_refused(tmp_path):
    bad = _tar(tmp_path / "xen_1.0.orig.tar.xz", {"xen-1.0/ok": "x", "xen-1.0/../../evil": "x"})
    rec = SourceRecord("1.0-1", "3.0 (quilt)", (_file(bad),))
    dest = tmp_path / "1.0-1.git"
    with pytest.raises(VerifyError, match="unsafe member"):
        debian._import(rec, {bad.name: bad}, dest, None)
    assert not dest.exists() and not (tmp_path.parent / "evil").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_two_top_level_directories_are_refused(tmp_path):
    bad = _tar(tmp_path / "xen_1.0.orig.tar.xz", {"a/x": "x", "b/y": "y"})
    rec = SourceRecord("1.0-1", "3.0 (quilt)", (_file(bad),))
    with pytest.raises(VerifyError, match="one top-level directory"):
        debian._import(rec, {bad.name: bad}, tmp_path / "1.0-1.git", None)


def test_lock_serialises_runs(tmp_path):
    import threading

    lock = tmp_path / "debian" / ".lock"
    entered = threading.Event()

    def second() -> None:
        with debian._locked(lock):
            entered.set()

    with debian._locked(lock):
        t = threading.Thread(target=second)
        t.start()
        assert not entered.wait(0.3)  # blocked while the first run holds the lock
    assert entered.wait(5)
    t.join()


class FakeApt:
    """Stands in for apt: 'serves' the given bytes under the given names."""

    suite = "sid"

    def __init__(self, served: dict[str, bytes], error: str = "") -> None:
        self.served, self.error, self.calls = served, error, 0

    def download(self, version: str, dest: Path) -> str:
        self.calls += 1
        for name, data in self.served.items():
            (dest / name).write_bytes(data)
        return self.error


def test_checksum_mismatch_is_an_error(tmp_path):
    good = tmp_path / "xen_1.0.orig.tar.xz"
    good.write_bytes(b"the real tarball")
    rec = SourceRecord("1.0-1", "3.0 (quilt)", (_file(good),))
    files_dir = tmp_path / "files"
    apt = FakeApt({good.name: b"the real tarbalL"})
    with pytest.raises(VerifyError, match=r"^checksum mismatch for xen_1.0.orig.tar.xz: "):
        debian._fetch(apt, rec, files_dir, None)  # type: ignore[arg-type]
    assert not list(files_dir.iterdir())


def test_fetch_keeps_what_arrived_and_reuses_it(tmp_path):
    orig, dsc = tmp_path / "xen_1.0.orig.tar.xz", tmp_path / "xen_1.0-1.dsc"
    orig.write_bytes(b"tarball")
    dsc.write_bytes(b"dsc")
    rec = SourceRecord("1.0-1", "3.0 (quilt)", (_file(dsc), _file(orig)))
    files_dir = tmp_path / "files"
    apt = FakeApt({orig.name: b"tarball"}, error="Failed to fetch xen_1.0-1.dsc 404 Not Found")
    have, error = debian._fetch(apt, rec, files_dir, None)  # type: ignore[arg-type]
    assert set(have) == {orig.name} and "404" in error
    apt.served = {orig.name: b"tarball", dsc.name: b"dsc"}
    apt.error = ""
    have, error = debian._fetch(apt, rec, files_dir, None)  # type: ignore[arg-type]
    assert set(have) == {orig.name, dsc.name} and error == ""
    calls = apt.calls
    debian._fetch(apt, rec, files_dir, None)  # type: ignore[arg-type]
    assert apt.calls == calls  # everything verified in the cache: apt is not run
