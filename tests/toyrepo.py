"""A small git repository of made-up C, with one branch per apply status.

The patch under test (``PATCH``) changes ``hv/mm.c``'s ``fill_slot`` and uses
``frob_widget``, which ``master`` introduces in its second commit. Branches:

- ``written-on``: the commit the patch was made on             -> clean
- ``master``: later, five lines added at the top of mm.c      -> offsets
- ``near``: a context line of the hunk changed                -> three-way
- ``clash``: the patched lines changed another way            -> conflict
- ``applied``: the patch committed verbatim                    -> already-applied (reverse)
- ``reworded``: same diff under another subject, context moved  -> already-applied (patch-id)
- ``backport``: a reworked form under the same subject, with a
  ``master commit:`` line naming ``upstream`` (the patch on master) -> already-applied
- ``old``: forked before ``frob_widget`` existed (named in context only) -> conflict
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SUBJECT = "hv/mm: make fill_slot report whether it filled"

MM_C = """\
#include "mm.h"

static unsigned long slots[16];

int slot_index(unsigned long addr)
{
    return (addr >> 39) & 15;
}

void fill_slot(unsigned long addr, unsigned long value)
{
    int idx = slot_index(addr);

    frob_widget(idx);
    slots[idx] = value;
    count_fill(idx);
}

void zap_slot(unsigned long addr)
{
    slots[slot_index(addr)] = 0;
}

int slot_is_set(unsigned long addr)
{
    return slots[slot_index(addr)] != 0;
}
"""

WIDGET_H = """\
void frob_widget(int idx);
void count_fill(int idx);
"""

PATCHED_FILL = """\
int fill_slot(unsigned long addr, unsigned long value)
{
    int idx = slot_index(addr);

    frob_widget(idx);
    if ( slots[idx] )
        return 0;
    slots[idx] = value;
    count_fill(idx);
    return 1;
}
"""

ORIG_FILL = MM_C[MM_C.index("void fill_slot"):MM_C.index("void zap_slot")].rstrip("\n") + "\n"


def git(repo: Path, *args: str, input: str | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Toy Author", "GIT_AUTHOR_EMAIL": "toy@example.org",
        "GIT_COMMITTER_NAME": "Toy Author", "GIT_COMMITTER_EMAIL": "toy@example.org",
        "GIT_AUTHOR_DATE": "2016-01-12T10:00:00Z", "GIT_COMMITTER_DATE": "2016-01-12T10:00:00Z",
    }
    r = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True,
                       input=input, check=True)
    return r.stdout.strip()


def _write(repo: Path, rel: str, text: str) -> None:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def _commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def build(root: Path) -> tuple[Path, Path]:
    """Create the repository under ``root``; return (repo, patch file)."""
    repo = root / "toy"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    mm_without_widget = MM_C.replace("    frob_widget(idx);\n", "")
    _write(repo, "hv/mm.c", mm_without_widget)
    _write(repo, "hv/mm.h", "void count_fill(int idx);\n")
    _commit(repo, "hv: initial import")
    git(repo, "branch", "old")

    _write(repo, "hv/mm.c", MM_C)
    _write(repo, "hv/mm.h", WIDGET_H)
    _commit(repo, "hv: add frob_widget")
    git(repo, "branch", "written-on")

    # The patch, made with git so it carries index lines (3-way needs them).
    _write(repo, "hv/mm.c", MM_C.replace(ORIG_FILL, PATCHED_FILL))
    diff = git(repo, "diff") + "\n"
    upstream = _commit(repo, SUBJECT)
    git(repo, "branch", "applied")
    git(repo, "branch", "upstream")
    git(repo, "reset", "-q", "--hard", "written-on")
    patch = root / "fill-slot.patch"
    patch.write_text(
        "From: Toy Author <toy@example.org>\n"
        "Date: Tue, 12 Jan 2016 10:00:00 +0000\n"
        "Message-ID: <toy-1@example.org>\n"
        f"Subject: [PATCH v2] {SUBJECT}\n\n"
        "Callers want to know whether the slot was empty.\n\n"
        "Signed-off-by: Toy Author <toy@example.org>\n---\n" + diff)

    # master: five lines at the top shift every hunk by +5.
    _write(repo, "hv/mm.c", "/*\n * Toy memory management.\n *\n * Made up.\n */\n" + MM_C)
    _commit(repo, "hv/mm: add a header comment")

    def branch_from(name: str, start: str, files: dict[str, str], message: str) -> None:
        git(repo, "checkout", "-q", "-b", name, start)
        for rel, text in files.items():
            _write(repo, rel, text)
        _commit(repo, message)
        git(repo, "checkout", "-q", "master")

    near = MM_C.replace("void fill_slot(unsigned long addr, unsigned long value)\n{\n",
                        "void fill_slot(unsigned long addr, unsigned long value)\n{\n"
                        "    /* filled on demand */\n")
    branch_from("near", "written-on", {"hv/mm.c": near}, "hv/mm: comment fill_slot")
    clash = MM_C.replace("    slots[idx] = value;\n    count_fill(idx);\n",
                         "    slots[idx] = value | 1;\n    count_fill(idx + 1);\n")
    branch_from("clash", "written-on", {"hv/mm.c": clash}, "hv/mm: tag filled slots")

    patched = MM_C.replace(ORIG_FILL, PATCHED_FILL)
    reworded = patched.replace("int slot_index(unsigned long addr)\n{\n",
                               "int slot_index(unsigned long addr)\n{\n    /* 16 slots */\n")
    git(repo, "checkout", "-q", "-b", "reworded", "written-on")
    _write(repo, "hv/mm.c", patched)
    _commit(repo, "mm: return fill status")
    _write(repo, "hv/mm.c", reworded.replace("    frob_widget(idx);\n    if",
                                             "    frob_widget(idx);\n\n    if"))
    _commit(repo, "mm: spacing")
    git(repo, "checkout", "-q", "master")

    backported = MM_C.replace(ORIG_FILL, PATCHED_FILL.replace("return 0;", "return false;")
                              .replace("return 1;", "return true;")
                              .replace("int fill_slot", "bool fill_slot"))
    branch_from("backport", "written-on", {"hv/mm.c": backported},
                f"{SUBJECT}\n\nmaster commit: {upstream}\nmaster date: 2016-01-12 10:00:00 +0000")
    return repo, patch


# --------------------------------------------------------------------------- backport triage
#
# A second repository for the history questions: a fix on master that calls a helper
# master added just before it, and one branch per shape a stable branch gives it.

TRIAGE_CORE_C = """\
#include "core.h"

static int table[16];

int first_slot(int idx)
{
    int v = table[idx];

    v = v + 1;
    table[idx] = v;
    log_slot(idx);
    return v;
}

int spare_one(void)
{
    return 0;
}

int spare_two(void)
{
    return 1;
}

int next_slot(int idx)
{
    int v = table[idx];

    table[idx] = v * 2;
    log_slot(idx);
    return v;
}
"""

TRIAGE_HELPER = """
int widget_ready(int idx)
{
    return idx < 16;
}
"""

# The fix: two hunks, one per function. It calls widget_ready() (the prerequisite) and
# uses what it defines itself (a macro, a local, a label), a string and a comment.
TRIAGE_FIX_FIRST = ("    v = v + 1;\n", "    v = v + 1;\n    if ( v > WIDGET_MAX )\n"
                    "        v = WIDGET_MAX; /* clamp_everything_beyond */\n")
TRIAGE_FIX_NEXT = ("    table[idx] = v * 2;\n",
                   "    int ready = widget_ready(idx);\n\n    if ( !ready )\n        goto out;\n"
                   "    table[idx] = v * 2;\n    printk(\"zorblax %d\\n\", ready);\n out:\n")
TRIAGE_FIX_SUBJECT = "hv/core: clamp and check slots"
TRIAGE_SECOND_SUBJECT = "hv/core: note spare slots"


def _triage_fixed(text: str) -> str:
    text = text.replace(*TRIAGE_FIX_FIRST).replace(*TRIAGE_FIX_NEXT)
    return text.replace('#include "core.h"\n', '#include "core.h"\n\n#define WIDGET_MAX 15\n')


def build_triage(root: Path) -> tuple[Path, dict[str, str]]:
    """The triage repository under ``root``; returns (repo, {name: sha}).

    Branches (all but ``master`` fork from ``base``, before the helper existed):

    - ``lacks``: the fix applies as text but calls a helper the branch lacks
                                             -> missing-prerequisite, naming ``helper``
    - ``with-helper``: the helper backported   -> clean (and nothing falsely missing)
    - ``adjusted``: the fix backported in another form with a ``master commit:`` line;
      a 3-way merge would add its first hunk a second time  -> already-applied (marker)
    - ``partial``: only the fix's second hunk backported  -> already-applied, partial
    - ``reverted``: cherry-picked, then reverted ("This reverts commit")  -> clean, reverted
    - ``undone``: cherry-picked, then undone by a commit whose diff is its reverse
                                             -> clean, reverted (patch-id)
    - ``reapplied``: ``reverted``, then picked again  -> already-applied
    - ``squashed``: another fix and this one in one commit, two ``master commit:`` lines,
      this one adjusted                      -> already-applied, naming the squash
    """
    repo = root / "triage"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "master")
    shas: dict[str, str] = {}
    _write(repo, "hv/core.c", TRIAGE_CORE_C)
    _write(repo, "hv/core.h", "void log_slot(int idx);\n")
    shas["base"] = _commit(repo, "hv: initial import")
    git(repo, "branch", "base")
    helper_c = TRIAGE_CORE_C + TRIAGE_HELPER
    helper_h = "void log_slot(int idx);\nint widget_ready(int idx);\n"
    _write(repo, "hv/core.c", helper_c)
    _write(repo, "hv/core.h", helper_h)
    shas["helper"] = _commit(repo, "hv/core: add widget_ready()")
    _write(repo, "hv/core.c", _triage_fixed(helper_c))
    shas["fix"] = _commit(repo, f"{TRIAGE_FIX_SUBJECT}\n\nSlots beyond the widget are bogus.")
    second = _triage_fixed(helper_c).replace("int spare_one(void)\n{\n",
                                             "int spare_one(void)\n{\n    /* spare */\n")
    _write(repo, "hv/core.c", second)
    shas["second"] = _commit(repo, TRIAGE_SECOND_SUBJECT)

    def branch(name: str, start: str) -> None:
        git(repo, "checkout", "-q", "-b", name, start)

    def marker(sha: str) -> str:
        return f"master commit: {sha}\nmaster date: 2016-01-12 10:00:00 +0000\n"

    branch("lacks", "base")
    _write(repo, "NOTES", "stable notes\n")
    shas["lacks"] = _commit(repo, "stable: notes")
    branch("with-helper", "lacks")
    _write(repo, "hv/core.c", helper_c)
    _write(repo, "hv/core.h", helper_h)
    shas["with-helper"] = _commit(repo, f"hv/core: add widget_ready()\n\n{marker(shas['helper'])}")

    # Adjusted: the clamp placed after the store, away from where the fix puts it.
    adjusted = _triage_fixed(helper_c).replace(
        "    if ( v > WIDGET_MAX )\n        v = WIDGET_MAX; /* clamp_everything_beyond */\n", ""
    ).replace("    log_slot(idx);\n    return v;\n}\n\nint spare_one",
              "    log_slot(idx);\n    if ( v > WIDGET_MAX )\n        v = WIDGET_MAX;\n"
              "    return v;\n}\n\nint spare_one")
    branch("adjusted", "with-helper")
    _write(repo, "hv/core.c", adjusted)
    shas["adjusted"] = _commit(repo, f"{TRIAGE_FIX_SUBJECT}\n\n{marker(shas['fix'])}")

    branch("partial", "with-helper")
    _write(repo, "hv/core.c", helper_c.replace(*TRIAGE_FIX_NEXT))
    shas["partial"] = _commit(repo, f"hv/core: check slots\n\n{marker(shas['fix'])}")

    branch("reverted", "with-helper")
    git(repo, "cherry-pick", "-x", shas["fix"])
    shas["picked"] = git(repo, "rev-parse", "HEAD")
    git(repo, "revert", "--no-edit", "HEAD")
    shas["revert"] = git(repo, "rev-parse", "HEAD")

    branch("reapplied", "reverted")
    git(repo, "cherry-pick", "-x", shas["fix"])
    shas["reapplied"] = git(repo, "rev-parse", "HEAD")

    branch("undone", "with-helper")
    git(repo, "cherry-pick", "-x", shas["fix"])
    shas["picked-undone"] = git(repo, "rev-parse", "HEAD")
    _write(repo, "hv/core.c", helper_c)
    shas["undo"] = _commit(repo, "hv/core: go back to the old slot handling")

    branch("squashed", "with-helper")
    _write(repo, "hv/core.c", second.replace("v = WIDGET_MAX; /* clamp_everything_beyond */",
                                             "v = WIDGET_MAX; /* clamp */"))
    shas["squashed"] = _commit(repo, f"{TRIAGE_SECOND_SUBJECT}\n\n{marker(shas['second'])}\n"
                                     f"{TRIAGE_FIX_SUBJECT}\n\n{marker(shas['fix'])}")
    git(repo, "checkout", "-q", "master")
    return repo, shas
