"""Locating roles, verbatim extraction with provenance, constants, pycparser analysis."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from verifier import extract
from verifier.model import VerifyError

# --------------------------------------------------------------------------- no tree needed

OWN_C = """\
/* a comment with a brace { that must not count */
static int helper(int x)
{
    const char *s = "}{";   /* braces in a string */
    char c = '}';
    // line comment }
    return x + (s[0] == c);
}

int other(void) { return helper(1); }
"""


def test_tree_sitter_and_brace_scanner_agree_on_own_text(tmp_path: Path) -> None:
    f = tmp_path / "own.c"
    f.write_text(OWN_C)
    found = extract.ts_functions(OWN_C.encode())
    assert found == {"helper": (2, 8), "other": (10, 10)}
    piece = extract.locate_function(f, "own.c", "helper", "x", "abc123")
    assert piece.first_line == 2 and piece.last_line == 8 and not piece.notes
    assert piece.text.splitlines()[0] == "static int helper(int x)"
    assert piece.text.endswith("}")
    assert piece.with_line().startswith('#line 2 "own.c" /* commit abc123 */\n')
    assert piece.commit == "abc123"


def test_masking_keeps_lengths_and_hides_braces() -> None:
    masked = extract.mask_comments_strings(OWN_C)
    assert len(masked) == len(OWN_C)
    assert masked.count("{") == 2 and masked.count("}") == 2
    assert extract.brace_end(masked, OWN_C.index("static")) == OWN_C.index("\n\nint other")


def test_normalisation_is_counted_and_analysis_finds_free_names() -> None:
    src = (
        "typedef unsigned long ul;\n"
        "static int g;\n"
        "int f(ul x) __attribute__((noinline));\n"
        "int f(ul x) { __typeof__(x) y = x ?: 1; g = known(y); return y + unknown_var; }\n"
    )
    text, counts = extract.normalise_for_pycparser(src)
    assert counts == {"__attribute__": 1, "?:": 1, "typeof": 1}
    assert "?:" not in text.replace(" ", "")
    a = extract.analyse(src)
    assert a.free == {"known", "unknown_var"}
    assert a.called == {"known"}


def test_not_a_tree_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="not a Xen tree"):
        extract.find_roles(tmp_path)


# --------------------------------------------------------------------------- real trees


FIXTURES = {
    "XEN_TREE_417": "xen_tree_417",
    "XEN_TREE_414": "xen_tree_414",
    "XEN_TREE_PRE": "xen_tree_pre",
    "XEN_TREE_SEED": "xen_tree_seed",
}


def _tree(env: str, request: pytest.FixtureRequest) -> Path:
    """The tree named by ``env``, else the conftest fixture (which may skip)."""
    v = os.environ.get(env)
    if v:
        return Path(v)
    try:
        return request.getfixturevalue(FIXTURES[env])
    except pytest.FixtureLookupError:
        pytest.skip(f"{env} is not set (path of a Xen tree) and there is no fixture")


EXPECT = {
    # env var: (validator, devalidator, slot init, page lock, fill returns, walk present)
    "XEN_TREE_417": ("promote_l4_table", "demote_l4_table", "init_xen_l4_slots",
                     "page_lock_unsafe", "bool", True),
    "XEN_TREE_414": ("promote_l4_table", "demote_l4_table", "init_xen_l4_slots",
                     "page_lock", "bool", True),
    "XEN_TREE_PRE": ("alloc_l4_table", "free_l4_table", "init_guest_l4_table",
                     "page_lock", "void", False),
    "XEN_TREE_SEED": ("alloc_l4_table", "free_l4_table", "init_guest_l4_table",
                      "page_lock", "bool_t", True),
}


@pytest.mark.parametrize("env", sorted(EXPECT))
def test_roles_per_version(env: str, request: pytest.FixtureRequest) -> None:
    tree = _tree(env, request)
    roles = extract.find_roles(tree, commit="c0ffee")
    val, deval, init, lock, fill_ret, walk = EXPECT[env]
    assert roles["l4_validate"].name == val
    assert roles["l4_devalidate"].name == deval
    assert roles["l4_slot_init"].name == init
    assert roles["page_lock"].name == lock
    assert roles["page_unlock"].name == "page_unlock"
    fill = roles["fill_ro_mpt"]
    assert fill.text.split("fill_ro_mpt")[0].split() == [fill_ret]
    assert extract.has_walk(roles["restore_fixup"]) is walk
    for piece in roles.values():
        lines = (tree / piece.file).read_text().split("\n")
        # verbatim: the text is exactly those lines of the tree file
        assert piece.text == "\n".join(lines[piece.first_line - 1 : piece.last_line])
        assert piece.commit == "c0ffee"


@pytest.mark.parametrize("env", sorted(EXPECT))
def test_fixup_statement_is_anchored_by_content(env: str, request) -> None:
    tree = _tree(env, request)
    fix = extract.find_roles(tree)["restore_fixup"]
    assert fix.kind == "statement" and fix.name == "arch_set_info_guest"
    assert fix.text.lstrip().startswith("if ( v->vcpu_id == 0 )")
    assert "d->vm_assist = c(vm_assist);" in fix.text
    assert any(m.startswith("#define c(fld)") for m in fix.macros)
    assert "struct domain *d;" in fix.locals
    if extract.has_walk(fix):
        assert fix.text.rstrip().endswith("}") and "unsigned int i;" in fix.locals
    else:  # before the fix: the brace-less one-statement if
        assert fix.last_line == fix.first_line + 1


@pytest.mark.parametrize("env", sorted(EXPECT))
def test_constants_come_from_the_tree_and_evaluate(env: str, tmp_path: Path, request) -> None:
    tree = _tree(env, request)
    names = ["PGT_l4_page_table", "PGT_type_mask", "PGT_locked", "VMASST_TYPE_m2p_strict",
             "ERESTART", "RO_MPT_VIRT_START", "l4_table_offset"]
    c = extract.constants(tree, names)
    assert not c.missing
    files = {f for _, f, _, _ in c.defines}
    assert any(f.endswith("mm.h") for f in files) and "xen/include/public/xen.h" in files
    prog = tmp_path / "c.c"
    prog.write_text(
        "#include <stdio.h>\n" + c.render()
        + 'int main(void){printf("%d %d %lu %d\\n", VMASST_TYPE_m2p_strict, ERESTART,'
        " (unsigned long)l4_table_offset(RO_MPT_VIRT_START),"
        " (PGT_l4_page_table & PGT_type_mask) == PGT_l4_page_table && !(PGT_locked &"
        " PGT_type_mask));}\n"
    )
    subprocess.run(["gcc", "-o", str(tmp_path / "c"), str(prog)], check=True)
    out = subprocess.run([str(tmp_path / "c")], capture_output=True, text=True).stdout.split()
    assert out == ["32", "85", "256", "1"]


def test_define_caches_follow_a_reused_worktree_path(tmp_path: Path) -> None:
    """One checkout path serves ref after ref: the define index must be the current
    tree's, never the previous ref's (a stale index once failed master's harness with
    "identifiers neither provided by ... the tree's headers")."""
    hdr = tmp_path / "xen/include/asm-x86"
    hdr.mkdir(parents=True)
    src = tmp_path / "xen/arch/x86"
    src.mkdir(parents=True)
    (hdr / "config.h").write_text("#define OLD_SLOT 1\n")
    (src / "mm.c").write_text("#define PTF_old 1\n")
    assert "OLD_SLOT" in extract._define_index(tmp_path)
    assert "PTF_old" in extract.file_defines(tmp_path, "xen/arch/x86/mm.c")
    # the next ref checked out at the same path: files rewritten, one header added
    (hdr / "config.h").write_text("#define NEW_SLOT 2\n#define OTHER 3\n")
    (hdr / "page.h").write_text("#define PAGE_ONLY 4\n")
    (src / "mm.c").write_text("#define PTF_partial_set 2\n")
    index = extract._define_index(tmp_path)
    assert "NEW_SLOT" in index and "PAGE_ONLY" in index and "OLD_SLOT" not in index
    assert set(extract.file_defines(tmp_path, "xen/arch/x86/mm.c")) == {"PTF_partial_set"}
