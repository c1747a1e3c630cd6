"""verifier.patch: every input kind, its metadata, the diff handed to git apply, bad input."""

from __future__ import annotations

import difflib
import itertools
import os
import subprocess
from pathlib import Path

import git
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verifier.model import VerifyError
from verifier.patch import (
    DiffHunk,
    diff_files,
    hunk_functions,
    load_series,
    parse_hunks,
    parse_subject,
    parse_trailers,
)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "patches"
EXAMPLE = ROOT / "patches" / "m2p-strict-v1.patch"
SEED_PAGE = Path("/work/shared/seeds/000_21dd90f275e05086.txt")
SEED_SUBJECT = "x86/PV: fix unintended dependency of m2p-strict mode on migration-v2"
SEED_FUNCTIONS = ("arch_set_info_guest", "init_guest_l4_table", "alloc_l4_table",
                  "free_l4_table", "free_page_type")

# The made-up source the widget patches in tests/data/patches apply to, in order.
WIDGET_C = """\
#include "widget.h"

static int widget_count;

int widget_add(struct widget *w)
{
    widget_count++;
    return 0;
}

static void widget_reset(struct widget *w)
{
    w->size = 0;
    w->flags = 0;
}

void widget_free(struct widget *w)
{
    widget_reset(w);
    widget_count--;
}
"""
WIDGET_H = "struct widget {\n    int size;\n    int flags;\n};\n"


def _widget_tree(root: Path) -> Path:
    (root / "src").mkdir(parents=True)
    (root / "src" / "widget.c").write_text(WIDGET_C)
    (root / "src" / "widget.h").write_text(WIDGET_H)
    return root


def _git_apply(tree: Path, diff: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "apply", *args, "-"], cwd=tree, input=diff, text=True,
                          capture_output=True)


def _error(inputs: list[str], git_dir: Path | None = None) -> str:
    with pytest.raises(VerifyError) as exc:
        load_series(inputs, git_dir)
    msg = str(exc.value)
    assert "\n" not in msg, "errors are one line"
    return msg


# --------------------------------------------------------------------------- kinds


def test_plain_diff():
    series = load_series([str(DATA / "widget-owner.diff")])
    (p,) = series.patches
    assert p.meta.kind == "diff"
    assert p.meta.subject == "widget-owner.diff"  # nothing else names it
    assert p.meta.source == str(DATA / "widget-owner.diff")
    assert [f.path for f in p.files] == ["src/widget.c", "src/widget.h"]
    c, h = p.files
    assert (c.old_blob, c.new_blob, c.hunks, c.added, c.removed) == (
        "64d6c69", "c125207", 1, 1, 0)
    assert h.old_path == h.new_path == "src/widget.h"
    assert p.functions == ("widget_reset",)
    assert p.diff.startswith("diff --git a/src/widget.c b/src/widget.c\nindex 64d6c69..")
    assert p.diff.endswith(" };\n")


def test_format_patch_metadata_and_diff():
    (p,) = load_series([str(DATA / "widget-null-v3.patch")]).patches
    m = p.meta
    assert m.kind == "format-patch"
    assert m.subject == "widget: refuse a NULL widget in widget_add"
    assert (m.version, m.number, m.total) == (3, None, None)
    assert m.author == "Ada Lovelace <ada@example.org>"
    assert m.date == "2024-03-01T11:30:00+00:00"
    assert m.message_id == "widget-null-v3@example.org"
    assert m.base_commit == "2e480469505349882fbcd3a6fce0201ee127c433"
    assert m.trailers == (("Reported-by", "Grace Hopper <grace@example.org>"),
                          ("Signed-off-by", "Ada Lovelace <ada@example.org>"))
    assert p.message.startswith("A NULL widget used to be counted.\n\nReported-by:")
    assert "---" not in p.message and "src/widget.c |" not in p.message  # no diffstat
    # The diff: git headers kept, base-commit footer and "-- \n2.39.5" signature dropped.
    assert p.diff.startswith("diff --git a/src/widget.c b/src/widget.c\nindex 7700b51..64d6c69")
    assert "base-commit" not in p.diff and "2.39.5" not in p.diff and "\n-- \n" not in p.diff
    assert p.diff.endswith("     return 0;\n }\n")


def test_mbox_series_in_order_without_cover_letter():
    series = load_series([str(DATA / "widget-v2.mbox")])
    subjects = [p.meta.subject for p in series.patches]
    assert subjects == ["widget: refuse a NULL widget in widget_add",
                        "widget: track the owner of a widget",
                        "widget: never let the count go negative"]
    assert [p.meta.source for p in series.patches] == [
        f"{DATA / 'widget-v2.mbox'}#{n}" for n in (1, 2, 3)]
    assert {p.meta.kind for p in series.patches} == {"mbox"}
    assert [(p.meta.version, p.meta.number, p.meta.total) for p in series.patches] == [
        (2, 1, 3), (2, 2, 3), (2, 3, 3)]
    assert [p.meta.message_id for p in series.patches] == [
        "widget-1@example.org", "widget-2@example.org", "widget-3@example.org"]
    # The cover letter's base-commit is the first patch's base, and only its.
    assert [p.meta.base_commit for p in series.patches] == [
        "2e480469505349882fbcd3a6fce0201ee127c433", None, None]
    assert series.patches[1].meta.trailers[-1] == ("Acked-by", "Alan Turing <alan@example.org>")
    assert series.subject == "widget: refuse a NULL widget in widget_add (+2 more)"


def test_mbox_series_diffs_apply_in_order(tmp_path):
    tree = _widget_tree(tmp_path / "t")
    for p in load_series([str(DATA / "widget-v2.mbox")]).patches:
        r = _git_apply(tree, p.diff)
        assert r.returncode == 0, (p.meta.source, r.stderr)
    text = (tree / "src" / "widget.c").read_text()
    assert "if ( !w )" in text and "w->owner = 0;" in text and "if ( widget_count > 0 )" in text
    assert "int owner;" in (tree / "src" / "widget.h").read_text()


def _messages(mbox: Path) -> list[str]:
    text = mbox.read_text()
    starts = [i for i, line in enumerate(text.splitlines(keepends=True))
              if line.startswith("From ") and " Mon Sep 17 00:00:00 2001" in line]
    lines = text.splitlines(keepends=True)
    bounds = [*starts, len(lines)]
    return ["".join(lines[a:b]) for a, b in itertools.pairwise(bounds)]


def test_mbox_members_are_put_in_number_order(tmp_path):
    cover, one, two, three = _messages(DATA / "widget-v2.mbox")
    shuffled = tmp_path / "shuffled.mbox"
    shuffled.write_text(three + cover + one + two)
    series = load_series([str(shuffled)])
    assert [p.meta.number for p in series.patches] == [1, 2, 3]
    assert [p.meta.source for p in series.patches] == [f"{shuffled}#{n}" for n in (1, 2, 3)]


def test_mbox_body_line_starting_with_from_does_not_split_a_message(tmp_path):
    cover, one, two, three = _messages(DATA / "widget-v2.mbox")
    two = two.replace("Signed-off-by: Ada", "From the spec: owners matter.\n\nSigned-off-by: Ada")
    mbox = tmp_path / "from.mbox"
    mbox.write_text(cover + one + two + three)
    series = load_series([str(mbox)])
    assert [p.meta.number for p in series.patches] == [1, 2, 3]
    assert series.patches[1].message.startswith("From the spec: owners matter.")
    assert len(series.patches[1].files) == 2


def test_mbox_replies_with_diffs_are_not_series_members(tmp_path):
    cover, one, two, three = _messages(DATA / "widget-v2.mbox")
    reply = (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Grace Hopper <grace@example.org>\n"
        "Subject: Re: [PATCH for-4.6 v2 2/3] widget: track the owner of a widget\n\n"
        "> +    w->owner = 0;\n\nWhy not this:\n\n"
        "--- a/src/widget.c\n+++ b/src/widget.c\n@@ -1 +1 @@\n"
        "-#include \"widget.h\"\n+#include \"other.h\"\n"
    )
    mbox = tmp_path / "thread.mbox"
    mbox.write_text(cover + one + two + reply + three)
    series = load_series([str(mbox)])
    assert [p.meta.number for p in series.patches] == [1, 2, 3]
    assert all("other.h" not in p.diff for p in series.patches)


def test_patchwork_page():
    (p,) = load_series([str(DATA / "widget-page.txt")]).patches
    m = p.meta
    assert m.kind == "patchwork"
    assert m.subject == "widget: never let the count go negative"
    assert (m.version, m.number, m.total) == (2, 3, 3)
    assert m.message_id == "widget-3@example.org"
    # The page shows a name; the address comes from the author's Signed-off-by.
    assert m.author == "Ada Lovelace <ada@example.org>"
    assert m.date == "2024-03-04T08:03:00+00:00"
    assert m.comments == (("Grace Hopper", "2024-03-04T12:00:00+00:00"),
                          ("Alan Turing", "2024-09-05T16:00:00+00:00"))
    assert m.trailers == (("Signed-off-by", "Ada Lovelace <ada@example.org>"),
                          ("Reviewed-by", "Grace Hopper <grace@example.org>"))
    assert p.message == ("A widget freed twice made the count negative.\n\n"
                         "Signed-off-by: Ada Lovelace <ada@example.org>\n"
                         "Reviewed-by: Grace Hopper <grace@example.org>")
    # Only the diff at the end: not the reviewer's suggestion, not the quoted ones.
    assert [f.path for f in p.files] == ["src/widget.c"]
    assert "caller.c" not in p.diff and "long size" not in p.diff
    assert not any(ln.startswith(">") for ln in p.diff.splitlines())
    # Taken verbatim (patchwork's two spaces after "@@"), with the missing newline added.
    assert "@@ -20,5 +20,6 @@  static void widget_reset(" in p.diff
    assert p.diff.endswith("+        widget_count--;\n }\n")


def test_patchwork_page_without_patch_section_takes_the_commit_message_diff(tmp_path):
    text = (DATA / "widget-page.txt").read_text()
    page = tmp_path / "page.txt"
    page.write_text(text[:text.rindex("\nPatch\ndiff mbox")])
    (p,) = load_series([str(page)]).patches
    assert [f.path for f in p.files] == ["src/widget.c"]
    assert "caller.c" not in p.diff and "long size" not in p.diff
    assert p.files[0].added == 2 and p.files[0].removed == 1


def test_patchwork_diff_applies(tmp_path):
    tree = _widget_tree(tmp_path / "t")
    for p in load_series([str(DATA / "widget-v2.mbox")]).patches[:2]:
        assert _git_apply(tree, p.diff).returncode == 0
    (page,) = load_series([str(DATA / "widget-page.txt")]).patches
    r = _git_apply(tree, page.diff)
    assert r.returncode == 0, r.stderr


def test_several_inputs_are_concatenated_in_order():
    series = load_series([str(DATA / "widget-null-v3.patch"), str(DATA / "widget-v2.mbox"),
                          str(DATA / "widget-owner.diff")])
    assert [p.meta.kind for p in series.patches] == [
        "format-patch", "mbox", "mbox", "mbox", "diff"]
    assert series.patches[0].meta.version == 3 and series.patches[1].meta.version == 2


def test_kind_is_detected_by_content_not_name(tmp_path):
    for src, kind in (("widget-page.txt", "patchwork"), ("widget-v2.mbox", "mbox"),
                      ("widget-null-v3.patch", "format-patch"), ("widget-owner.diff", "diff")):
        renamed = tmp_path / f"{kind}.diff.txt"
        renamed.write_bytes((DATA / src).read_bytes())
        assert load_series([str(renamed)]).patches[0].meta.kind == kind


def test_mail_without_from_line_and_with_encoded_headers(tmp_path):
    mail = tmp_path / "mail.eml"
    mail.write_text(
        "Subject: =?UTF-8?Q?=5BPATCH_v4_2/5=5D_widget:_caf=C3=A9?=\n"
        "From: =?UTF-8?Q?Ren=C3=A9?= <rene@example.org>\n"
        "Date: Sat, 2 Mar 2024 23:15:00 -0500\n"
        "Message-Id: <r@example.org>\n"
        "Content-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: quoted-printable\n\n"
        "Caf=C3=A9 fix.\n\nSigned-off-by: Ren=C3=A9 <rene@example.org>\n---\n"
        "--- a/src/widget.h\n+++ b/src/widget.h\n@@ -1,2 +1,2 @@\n struct widget {\n"
        "-    int size;\n+    long size;\n"
    )
    (p,) = load_series([str(mail)]).patches
    assert p.meta.kind == "format-patch"
    assert (p.meta.subject, p.meta.version, p.meta.number, p.meta.total) == (
        "widget: café", 4, 2, 5)
    assert p.meta.author == "René <rene@example.org>"
    assert p.meta.date == "2024-03-02T23:15:00-05:00"
    assert p.meta.trailers == (("Signed-off-by", "René <rene@example.org>"),)
    assert p.diff.endswith("+    long size;\n")


def test_latin1_mail_is_read_silently(tmp_path):
    mail = tmp_path / "latin.patch"
    mail.write_bytes(
        b"From: Jos\xe9 <j@example.org>\nSubject: [PATCH] x: caf\xe9\n"
        b"Date: Mon, 4 Mar 2024 09:00:00 +0000\n\nCaf\xe9 fix.\n\n"
        b"Signed-off-by: Jos\xe9 <j@example.org>\n---\n"
        b"--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-caf\xe9\n+cafe\n")
    (p,) = load_series([str(mail)]).patches
    assert p.meta.author == "José <j@example.org>" and p.meta.subject == "x: café"
    assert "-café\n" in p.diff


def test_git_show_output(tmp_path):
    repo = _tiny_repo(tmp_path / "r")
    show = tmp_path / "show.txt"
    show.write_text(repo.git.show("HEAD~1") + "\n")
    (p,) = load_series([str(show)]).patches
    assert p.meta.kind == "diff"
    assert p.meta.subject == "widget: track the owner of a widget"
    assert p.meta.commit == repo.commit("HEAD~1").hexsha
    assert p.meta.author == "Ada Lovelace <ada@example.org>"
    assert p.meta.trailers == (("Signed-off-by", "Ada Lovelace <ada@example.org>"),)


# --------------------------------------------------------------------------- git:REV


def _tiny_repo(path: Path) -> git.Repo:
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Ada Lovelace")
        cw.set_value("user", "email", "ada@example.org")
    _widget_tree(path)
    repo.index.add(["src/widget.c", "src/widget.h"])
    repo.index.commit("widget: initial")
    owner = WIDGET_C.replace("    w->flags = 0;\n", "    w->flags = 0;\n    w->owner = 0;\n")
    (path / "src" / "widget.c").write_text(owner)
    repo.index.add(["src/widget.c"])
    repo.index.commit("widget: track the owner of a widget\n\nMore words.\n\n"
                      "Signed-off-by: Ada Lovelace <ada@example.org>\n")
    (path / "NOTES").write_text("notes\n")
    repo.index.add(["NOTES"])
    repo.index.commit("add notes")
    return repo


def test_git_rev(tmp_path):
    repo = _tiny_repo(tmp_path / "r")
    (p,) = load_series(["git:HEAD~1"], tmp_path / "r").patches
    m = p.meta
    assert (m.kind, m.source) == ("git", "git:HEAD~1")
    assert m.commit == repo.commit("HEAD~1").hexsha and len(m.commit) == 40
    assert m.subject == "widget: track the owner of a widget"
    assert m.author == "Ada Lovelace <ada@example.org>"
    assert m.trailers == (("Signed-off-by", "Ada Lovelace <ada@example.org>"),)
    assert p.message.startswith("More words.")
    assert p.diff == repo.git.diff("HEAD~2", "HEAD~1") + "\n"
    assert p.diff.startswith("diff --git a/src/widget.c b/src/widget.c\nindex ")
    assert [f.path for f in p.files] == ["src/widget.c"]
    assert p.files[0].old_blob and p.files[0].new_blob
    assert not p.diff.rstrip().endswith(git.Git().version().split()[-1])  # no signature
    # Read-only: no ref, no index change.
    assert not repo.is_dirty(untracked_files=True)


def test_git_rev_errors(tmp_path):
    repo = _tiny_repo(tmp_path / "r")
    assert "no commit 'nope'" in _error(["git:nope"], tmp_path / "r")
    assert "no git repository" in _error(["git:HEAD"], None)
    (tmp_path / "plain").mkdir()
    assert "not a git repository" in _error(["git:HEAD"], tmp_path / "plain")
    assert "no revision" in _error(["git:"], tmp_path / "r")
    # A merge commit has no single diff.
    base = repo.head.commit
    repo.git.checkout("-q", "-b", "side", "HEAD~1")
    (tmp_path / "r" / "SIDE").write_text("x\n")
    repo.index.add(["SIDE"])
    repo.index.commit("side")
    repo.git.checkout("-q", "main")
    repo.git.merge("-q", "--no-edit", "side")
    assert repo.head.commit != base
    assert "merge commit" in _error(["git:HEAD"], tmp_path / "r")
    # An empty commit changes nothing.
    repo.git.commit("-q", "--allow-empty", "-m", "empty")
    assert "changes no file" in _error(["git:HEAD"], tmp_path / "r")
    assert _error(["git:nope"], tmp_path / "r").startswith("git:nope: ")


# --------------------------------------------------------------------------- the seed


def test_bundled_example():
    (p,) = load_series([str(EXAMPLE)]).patches
    m = p.meta
    assert m.kind == "format-patch"
    assert m.subject == SEED_SUBJECT
    assert m.author == "Jan Beulich <jbeulich@suse.com>"
    assert m.date == "2016-01-12T10:08:00+00:00"
    assert m.message_id == "5694DEAA02000078000C5D7A@prv-mh.provo.novell.com"
    assert m.version is None and m.number is None
    assert m.trailers == (("Signed-off-by", "Jan Beulich <jbeulich@suse.com>"),)
    assert p.message.startswith("This went unnoticed until a backport")
    assert [f.path for f in p.files] == [
        "xen/arch/x86/domain.c", "xen/arch/x86/mm.c", "xen/include/asm-x86/domain.h",
        "xen/include/asm-x86/mm.h"]
    assert [(f.hunks, f.added, f.removed) for f in p.files] == [
        (1, 40, 0), (3, 24, 6), (1, 2, 0), (1, 1, 1)]
    assert p.functions == SEED_FUNCTIONS
    assert p.diff.startswith("--- a/xen/arch/x86/domain.c\n") and p.diff.endswith("mfn);\n")


@pytest.mark.skipif(not SEED_PAGE.exists(), reason=f"seed page {SEED_PAGE} not present")
def test_seed_patchwork_page():
    (p,) = load_series([str(SEED_PAGE)]).patches
    m = p.meta
    assert m.kind == "patchwork"
    assert m.subject == SEED_SUBJECT
    assert m.message_id == "5694DEAA02000078000C5D7A@prv-mh.provo.novell.com"
    assert m.author == "Jan Beulich <jbeulich@suse.com>"
    assert m.date == "2016-01-12T10:08:00+00:00"
    assert m.trailers == (("Signed-off-by", "Jan Beulich <jbeulich@suse.com>"),)
    assert len(m.comments) == 14
    assert m.comments[0] == ("Andrew Cooper", "2016-01-12T11:55:00+00:00")
    assert m.comments[4] == ("Andrew Cooper", "2016-01-13T16:00:00+00:00")  # "4 p.m."
    assert m.comments[-1] == ("Jan Beulich", "2016-02-02T14:08:00+00:00")
    assert {a for a, _ in m.comments} == {"Andrew Cooper", "Jan Beulich"}
    assert p.message.endswith("Signed-off-by: Jan Beulich <jbeulich@suse.com>")
    assert SEED_SUBJECT not in p.message  # the page repeats the title: not in the body
    # The page's last diff, not a quoted one; identical to the bundled example's.
    assert not any(line.startswith(">") for line in p.diff.splitlines())
    (example,) = load_series([str(EXAMPLE)]).patches
    assert p.diff == example.diff
    assert p.functions == SEED_FUNCTIONS
    seed_diff = Path("/tmp/trees/seed-v1.diff")
    if seed_diff.exists():
        assert p.diff == seed_diff.read_text()


@pytest.mark.upstream
def test_bundled_example_applies_before_the_fix(xen_tree_pre):
    (p,) = load_series([str(EXAMPLE)]).patches
    r = _git_apply(xen_tree_pre, p.diff, "--check", "-v")
    assert r.returncode == 0, r.stderr
    assert "Hunk #1 succeeded at 1075 (offset 8 lines)" in r.stderr


@pytest.mark.upstream
def test_git_rev_of_the_committed_fix(xen_git):
    (p,) = load_series(["git:be05b5385f"], xen_git.git_dir).patches
    assert p.meta.kind == "git" and p.meta.commit.startswith("be05b5385f")
    assert p.meta.subject == SEED_SUBJECT
    assert ("Reviewed-by", "Andrew Cooper <andrew.cooper3@citrix.com>") in p.meta.trailers
    assert p.functions == SEED_FUNCTIONS
    assert all(f.old_blob and f.new_blob for f in p.files)


# --------------------------------------------------------------------------- helpers


def test_hunk_functions():
    diff = (
        "@@ -1067,8 +1067,48 @@  int arch_set_info_guest(\n"
        "@@ -1527,10 +1534,15 @@ static int alloc_l4_table(struct page_in\n"
        "@@ -1,3 +1,3 @@ struct pv_domain\n"
        "@@ -9,3 +9,3 @@\n"
        "@@ -20,3 +20,3 @@ #define FOO(x) (x)\n"
        "@@ -30,3 +30,3 @@ static struct page_info *get_page_x(unsigned long mfn)\n"
        "@@ -40,3 +40,3 @@ int arch_set_info_guest(\n"
    )
    assert hunk_functions(diff) == ("arch_set_info_guest", "alloc_l4_table", "get_page_x")
    assert hunk_functions("no hunks here\n") == ()


def test_parse_hunks_numbers_hunks_per_file():
    hunks = parse_hunks((DATA / "widget-v2.mbox").read_text().split("\n-- \n")[2]
                        .split("---\n", 1)[1])
    assert [(h.file, h.index) for h in hunks] == [("src/widget.c", 1), ("src/widget.h", 1)]
    c = hunks[0]
    assert isinstance(c, DiffHunk)
    assert (c.old_start, c.old_len, c.new_start, c.new_len) == (14, 6, 14, 7)
    assert c.header == "@@ -14,6 +14,7 @@ static void widget_reset(struct widget *w)"
    assert c.function == "widget_reset" and hunks[1].function is None
    assert c.old_file == "src/widget.c"
    assert c.lines[:4] == ((" ", "{"), (" ", "    w->size = 0;"), (" ", "    w->flags = 0;"),
                           ("+", "    w->owner = 0;"))


def test_parse_hunks_of_the_example():
    hunks = parse_hunks(load_series([str(EXAMPLE)]).patches[0].diff)
    assert [(h.file.rsplit("/", 1)[-1], h.index, h.old_start) for h in hunks] == [
        ("domain.c", 1, 1067), ("mm.c", 1, 1463), ("mm.c", 2, 1527), ("mm.c", 3, 1648),
        ("domain.h", 1, 248), ("mm.h", 1, 322)]
    # Header normalised to one space after "@@" for display.
    assert hunks[0].header == "@@ -1067,8 +1067,48 @@ int arch_set_info_guest("
    assert sum(k == "+" for h in hunks for k, _ in h.lines) == 67
    assert sum(k == "-" for h in hunks for k, _ in h.lines) == 7


def test_diff_files_new_deleted_renamed():
    diff = (
        "diff --git a/new.c b/new.c\nnew file mode 100644\nindex 0000000..1111111\n"
        "--- /dev/null\n+++ b/new.c\n@@ -0,0 +1,2 @@\n+int a;\n+int b;\n"
        "diff --git a/old.c b/old.c\ndeleted file mode 100644\nindex 2222222..0000000\n"
        "--- a/old.c\n+++ /dev/null\n@@ -1 +0,0 @@\n-int c;\n"
        "diff --git a/x/from.c b/y/to.c\nsimilarity index 100%\n"
        "rename from x/from.c\nrename to y/to.c\n"
    )
    new, old, moved = diff_files(diff)
    assert (new.old_path, new.new_path, new.old_blob, new.new_blob, new.added) == (
        None, "new.c", None, "1111111", 2)
    assert (old.old_path, old.new_path, old.old_blob, old.removed, old.path) == (
        "old.c", None, "2222222", 1, "old.c")
    assert (moved.old_path, moved.new_path, moved.hunks) == ("x/from.c", "y/to.c", 0)
    hunks = parse_hunks(diff)
    assert [(h.file, h.old_file) for h in hunks] == [("new.c", None), ("old.c", "old.c")]


def test_no_newline_marker_is_kept_for_git(tmp_path):
    (tmp_path / "f.txt").write_text("a\nb")
    diff_path = tmp_path / "nl.diff"
    diff_path.write_text("--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n a\n-b\n"
                         "\\ No newline at end of file\n+c\n\\ No newline at end of file")
    (p,) = load_series([str(diff_path)]).patches
    assert p.diff.endswith("+c\n\\ No newline at end of file\n")
    assert parse_hunks(p.diff)[0].lines == ((" ", "a"), ("-", "b"), ("+", "c"))
    assert _git_apply(tmp_path, p.diff).returncode == 0
    assert (tmp_path / "f.txt").read_text() == "a\nc"


@pytest.mark.parametrize("subject, expected", [
    ("[PATCH v2 3/7] x86: fix", ("x86: fix", 2, 3, 7)),
    ("[PATCH for-4.6] x86/mm: fix", ("x86/mm: fix", None, None, None)),
    ("Re: [PATCH] x86: fix", ("x86: fix", None, None, None)),
    ("RE: Re: [Xen-devel] [PATCH v5 01/10] xen:  two  spaces", ("xen: two spaces", 5, 1, 10)),
    ("[v2,3/7] x86: patchwork style", ("x86: patchwork style", 2, 3, 7)),
    ("[RFC PATCH for-4.6 V3 0/2] cover", ("cover", 3, 0, 2)),
    ("plain subject [not a prefix]", ("plain subject [not a prefix]", None, None, None)),
])
def test_parse_subject(subject, expected):
    assert parse_subject(subject) == expected


def test_parse_trailers():
    msg = ("Fix it.\n\nA: not a trailer block since text follows\n\n"
           "Signed-off-by: A <a@x>\n[jb: tweaked]\nAcked-by: B <b@x>\n  (continued)\n")
    assert parse_trailers(msg) == (("Signed-off-by", "A <a@x>"),
                                   ("Acked-by", "B <b@x> (continued)"))
    assert parse_trailers("Fix it.\n\nThis is: prose, not a trailer.\n") == ()
    assert parse_trailers("") == ()


_lines = st.lists(st.sampled_from(["a", "b", "{", "}", "", "x = 1;", "return 0;"]),
                  max_size=30)


@settings(max_examples=150, deadline=None)
@given(_lines, _lines)
def test_hunks_rebuild_the_new_file(old, new):
    a = [ln + "\n" for ln in old]
    b = [ln + "\n" for ln in new]
    diff = "".join(difflib.unified_diff(a, b, "a/f.c", "b/f.c"))
    if not diff:
        return
    out, pos = [], 0
    for h in parse_hunks(diff):
        start = h.old_start - 1 if h.old_len else h.old_start
        out += old[pos:start]
        olds = [t for k, t in h.lines if k != "+"]
        assert old[start:start + h.old_len] == olds
        out += [t for k, t in h.lines if k != "-"]
        pos = start + h.old_len
    out += old[pos:]
    assert out == new


# --------------------------------------------------------------------------- bad input

OWNER = (DATA / "widget-owner.diff").read_text()


@pytest.mark.parametrize("name, content, needles", [
    ("empty.diff", b"", ["empty file"]),
    ("blank.diff", b"\n  \n", ["empty file"]),
    ("notes.txt", b"hello\nthis is no patch\n", ["no diff found"]),
    ("nul.bin", b"\x89PNG\r\n\x1a\n\x00\x00", ["binary data"]),
    ("latin.diff", b"--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-caf\xe9\n+cafe\n", ["not UTF-8"]),
    ("gitbin.patch", b"diff --git a/logo.png b/logo.png\nnew file mode 100644\n"
     b"index 0000000..1234567\nGIT binary patch\nliteral 5\nMcmZ?wbhEKOP\n\n",
     ["binary change to logo.png", "cannot verify binary changes"]),
    ("bin.diff", b"diff --git a/logo.png b/logo.png\nindex 1111111..2222222 100644\n"
     b"Binary files a/logo.png and b/logo.png differ\n",
     ["binary change to logo.png", "cannot verify binary changes"]),
    ("ru.diff", b"diff -ru a/x.c b/x.c\n--- a/x.c\n+++ b/x.c\n@@ -1 +1 @@\n-a\n+b\n"
     b"Binary files a/logo.png and b/logo.png differ\n",
     ["binary change to logo.png", "cannot verify binary changes"]),
    ("trunc.diff", "".join(OWNER.splitlines(keepends=True)[:-2]).encode(),
     ["truncated", "src/widget.h hunk #1", "expects 4 old/5 new lines"]),
    ("trunc-mid.diff", "".join(OWNER.splitlines(keepends=True)[:9]
                               + OWNER.splitlines(keepends=True)[14:]).encode(),
     ["truncated", "src/widget.c hunk #1", "@@ -14,6 +14,7 @@"]),
    ("badhdr.diff", b"--- a/x.c\n+++ b/x.c\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n@@ -x +y @@\n",
     ["corrupt patch", "x.c hunk #2", "bad header"]),
    ("dotdot.diff", OWNER.replace("src/widget.h", "../etc/passwd").encode(),
     ["path escapes the tree", "../etc/passwd"]),
    ("abs.diff", b"--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-root\n+toor\n",
     ["path escapes the tree", "/etc/passwd"]),
    ("rename.diff", b"diff --git a/x.c b/x.c\nsimilarity index 100%\nrename from x.c\n"
     b"rename to sub/../../x.c\n", ["path escapes the tree", "rename to"]),
    ("cover.mbox", b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
     b"From: A <a@x>\nSubject: [PATCH 0/2] cover\n\nJust words.\n", ["no diff found"]),
])
def test_bad_input(tmp_path, name, content, needles):
    path = tmp_path / name
    path.write_bytes(content)
    msg = _error([str(path)])
    assert msg.startswith(f"{path}: "), msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_file_and_directory(tmp_path):
    assert _error([str(tmp_path / "nope.diff")]) == f"{tmp_path / 'nope.diff'}: no such file"
    assert "is a directory" in _error([str(tmp_path)])
    assert "no patch given" in _error([])


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.diff"
    path.write_text(OWNER)
    if os.geteuid() != 0:
        path.chmod(0)
    else:  # root reads anything: make the read fail as it would for a user
        real_open = os.open

        def denied(name, *args, **kw):
            if str(name) == str(path):
                raise PermissionError(13, "Permission denied")
            return real_open(name, *args, **kw)
        monkeypatch.setattr(os, "open", denied)
    assert "cannot read the file (permission denied)" in _error([str(path)])


def test_bad_series_member_is_named(tmp_path):
    cover, one, two, three = _messages(DATA / "widget-v2.mbox")
    broken = two.replace("+    int owner;\n", "")
    mbox = tmp_path / "broken.mbox"
    mbox.write_text(cover + one + broken + three)
    msg = _error([str(mbox)])
    assert msg.startswith(f"{mbox}: message 3 (")  # the file's third: cover, 1/3, this
    assert "track the owner" in msg and "src/widget.h hunk #1" in msg


def test_second_input_error_names_it(tmp_path):
    bad = tmp_path / "bad.diff"
    bad.write_text("nothing\n")
    msg = _error([str(DATA / "widget-owner.diff"), str(bad)])
    assert msg.startswith(f"{bad}: no diff found")


def test_corrupt_diff_text_in_helpers():
    with pytest.raises(VerifyError, match=r"x\.c hunk #1"):
        parse_hunks("--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n")
    with pytest.raises(VerifyError, match="corrupt patch"):
        diff_files("--- a/x.c\n+++ b/x.c\n@@ -1,3 +1,3 @@\n a\n-b\n")


def test_form_feed_lines_do_not_break_hunks(tmp_path):
    (tmp_path / "f.c").write_text("int a;\n\f\nint b;\n")
    d = tmp_path / "ff.diff"
    d.write_text("--- a/f.c\n+++ b/f.c\n@@ -1,3 +1,3 @@\n int a;\n \f\n-int b;\n+int c;\n")
    (p,) = load_series([str(d)]).patches
    assert parse_hunks(p.diff)[0].lines[1] == (" ", "\f")
    assert _git_apply(tmp_path, p.diff).returncode == 0
    assert (tmp_path / "f.c").read_text() == "int a;\n\f\nint c;\n"


def test_diff_quoted_in_the_commit_message_is_not_taken(tmp_path):
    mail = tmp_path / "quoted.patch"
    mail.write_text(
        "From: A <a@example.org>\nSubject: [PATCH] widget: shrink\n\n"
        "The layout changed like this:\n\n"
        "--- /tmp/old\t2015-08-27 16:34:00 -0400\n+++ /tmp/new\t2015-08-27 16:34:10 -0400\n"
        "@@ -1,2 +1,2 @@\n struct widget {\n-    int size;\n+    long size;\n\n"
        "Signed-off-by: A <a@example.org>\n---\n"
        + (DATA / "widget-owner.diff").read_text()
    )
    (p,) = load_series([str(mail)]).patches
    assert [f.path for f in p.files] == ["src/widget.c", "src/widget.h"]
    assert "/tmp/old" in p.message and "/tmp/old" not in p.diff
    assert p.meta.trailers == (("Signed-off-by", "A <a@example.org>"),)


def test_patch_as_base64_attachment(tmp_path):
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["From"] = "A <a@example.org>"
    msg["Subject"] = "[PATCH v2] widget: owner"
    msg["Message-ID"] = "<att@example.org>"
    msg.set_content("Adds an owner.\n\nSigned-off-by: A <a@example.org>\n")
    msg.add_attachment((DATA / "widget-owner.diff").read_bytes(), maintype="text",
                       subtype="x-patch", filename="owner.diff", cte="base64")
    path = tmp_path / "attached.eml"
    path.write_bytes(bytes(msg))
    (p,) = load_series([str(path)]).patches
    assert (p.meta.subject, p.meta.version, p.meta.message_id) == (
        "widget: owner", 2, "att@example.org")
    assert p.diff == (DATA / "widget-owner.diff").read_text()
    assert p.meta.trailers == (("Signed-off-by", "A <a@example.org>"),)


def test_gzipped_mbox(tmp_path):
    import gzip

    path = tmp_path / "t.mbox.gz"
    path.write_bytes(gzip.compress((DATA / "widget-v2.mbox").read_bytes()))
    assert [p.meta.number for p in load_series([str(path)]).patches] == [1, 2, 3]
    path.write_bytes(gzip.compress(b"x" * 100)[:20])
    assert "corrupt gzip file" in _error([str(path)])
