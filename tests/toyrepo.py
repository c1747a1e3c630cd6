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
- ``old``: forked before ``frob_widget`` existed               -> missing-prerequisite
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
