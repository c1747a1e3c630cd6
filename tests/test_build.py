"""The tree's own build, prepared and cached by content, and the BUILD check, on a made-up
mini tree whose Makefile follows the contract of xen/Makefile (tests/buildtree.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests import toyrepo
from tests.buildtree import WIDGET_C, write_tree
from verifier.build import (
    compile_unit,
    content_key,
    new_diagnostics,
    parse_compile_command,
    parse_diagnostics,
    prepare_tree,
)
from verifier.model import Outcome

pytestmark = pytest.mark.skipif(not (shutil.which("make") and shutil.which("gcc")
                                     and shutil.which("flex") and shutil.which("bison")),
                                reason="make, gcc, flex and bison are needed (./bootstrap)")

ERAS = [pytest.param(False, id="kbuild"), pytest.param(True, id="rules.mk")]
HEADERS = {False: "xen/arch/x86/include/asm/asm-offsets.h",
           True: "xen/include/asm-x86/asm-offsets.h"}


@pytest.mark.parametrize("rules_mk", ERAS)
def test_prepare_generates_headers_only_and_a_fresh_tree_restores_them(tmp_path, rules_mk):
    cache = tmp_path / "cache"
    first = prepare_tree(write_tree(tmp_path / "a", rules_mk=rules_mk), cache)
    assert first.ok, first.reason
    assert not first.cached
    a = tmp_path / "a"
    assert "#define PAGE_DESC_type 8" in (a / HEADERS[rules_mk]).read_text()
    assert (a / "xen/include/xen/compile.h").is_file()
    assert not (a / "xen/whole-build-ran").exists()  # the recipe's last line never runs
    config = (a / "xen/.config").read_text()
    assert "CONFIG_HVM=y" in config and "CONFIG_SHADOW_PAGING=y" in config  # the fragment
    assert (cache / "build" / first.key / "meta.json").is_file()

    second = prepare_tree(write_tree(tmp_path / "b", rules_mk=rules_mk), cache)
    assert second.ok and second.cached and second.key == first.key
    b = tmp_path / "b"
    for rel in (HEADERS[rules_mk], "xen/include/generated/autoconf.h", "xen/.config"):
        assert (b / rel).read_text() == (a / rel).read_text()
    # Preparing a prepared tree again is a no-op with the same key.
    again = prepare_tree(b, cache)
    assert again.ok and again.key == first.key


def test_a_restored_tree_names_itself_not_the_tree_it_was_prepared_in(tmp_path):
    """Rules.mk-era dependency files name headers by absolute path: restored, they name the
    new tree, so make in it does not depend on the first tree's files."""
    cache = tmp_path / "cache"
    a = write_tree(tmp_path / "a", rules_mk=True)
    assert prepare_tree(a, cache).ok
    dep = "xen/arch/x86/.asm-offsets.s.d"
    assert str(a) in (a / dep).read_text()
    b = write_tree(tmp_path / "b", rules_mk=True)
    tree = prepare_tree(b, cache)
    assert tree.cached
    text = (b / dep).read_text()
    assert str(b) in text and str(a) not in text
    shutil.rmtree(a)
    multi = tree.unit_commands("xen/common/multi.c")  # recorded by make, in b only
    assert len(multi) == 2 and all(str(b) in " ".join(c.argv) for c in multi)


def test_key_follows_what_preparation_reads_not_the_units(tmp_path):
    base = content_key(write_tree(tmp_path / "a"))
    unit = write_tree(tmp_path / "b")
    (unit / "xen/common/widget.c").write_text(WIDGET_C + "int more(void) { return 1; }\n")
    header = write_tree(tmp_path / "c")
    with open(header / "xen/include/xen/widget.h", "a") as f:
        f.write("int more(void);\n")
    gen = write_tree(tmp_path / "d")
    (gen / "xen/arch/x86/asm-offsets.c").write_text("/* changed */\n")
    assert content_key(unit) == base
    assert content_key(header) != base
    assert content_key(gen) != base


@pytest.mark.parametrize("rules_mk", ERAS)
def test_unit_commands_are_the_trees_own_and_follow_a_restored_tree(tmp_path, rules_mk):
    cache = tmp_path / "cache"
    a = prepare_tree(write_tree(tmp_path / "a", rules_mk=rules_mk), cache)
    cmd = a.unit_command("xen/common/widget.c")
    assert cmd is not None
    assert "-DWIDGET_FLAG=1" in cmd.argv and "-Werror" in cmd.argv  # per-file and tree flags
    assert cmd.cwd == (tmp_path / "a/xen/common" if rules_mk else tmp_path / "a/xen")
    multi = a.unit_commands("xen/common/multi.c")
    assert sorted(c.object for c in multi) == ["xen/common/multi_2.o", "xen/common/multi_3.o"]
    if not rules_mk:  # through the units that #include it
        assert sorted(c.unit for c in multi) == ["xen/common/multi_2.c", "xen/common/multi_3.c"]
    else:  # a pattern rule builds it twice, with different flags
        assert {a for c in multi for a in c.argv if a.startswith("-DLEVELS=")} == {
            "-DLEVELS=2", "-DLEVELS=3"}

    b = prepare_tree(write_tree(tmp_path / "b", rules_mk=rules_mk), cache)
    assert b.cached
    cmd_b = b.unit_command("xen/common/widget.c")
    assert cmd_b is not None
    assert str(tmp_path / "a") not in " ".join(cmd_b.argv) + str(cmd_b.cwd)
    assert compile_unit(b, "xen/common/widget.c").returncode == 0
    assert compile_unit(b, "xen/common/multi.c").returncode == 0


def test_a_failing_header_step_is_named_and_remembered(tmp_path):
    cache = tmp_path / "cache"
    root = write_tree(tmp_path / "a")
    (root / "xen/arch/x86/asm-offsets.c").write_text("void dummy(void) { oops }\n")
    tree = prepare_tree(root, cache)
    assert not tree.ok
    assert "header step `$(MAKE) arch/x86/include/asm/asm-offsets.h` failed" in tree.reason
    assert "asm-offsets.c:1" in tree.reason and "error" in tree.reason
    assert tree.unit_command("xen/common/widget.c") is None
    copy = write_tree(tmp_path / "b")
    (copy / "xen/arch/x86/asm-offsets.c").write_text("void dummy(void) { oops }\n")
    again = prepare_tree(copy, cache)
    assert not again.ok and again.cached and again.reason == tree.reason


def test_a_tree_without_the_build_is_not_prepared(tmp_path):
    (tmp_path / "t/xen").mkdir(parents=True)
    tree = prepare_tree(tmp_path / "t", tmp_path / "cache")
    assert not tree.ok and "xen/Makefile" in tree.reason


def test_diagnostics_are_tree_relative_with_function_and_option(tmp_path):
    root = tmp_path
    cwd = root / "xen"
    out = (
        "In file included from common/widget.c:2:\n"
        "./include/xen/widget.h:3:5: error: unknown type name 'bogus_t'\n"
        "common/widget.c: In function 'frob':\n"
        "common/widget.c:14:9: error: unused variable 'spare' [-Werror=unused-variable]\n"
        "   14 |     int spare;\n"
        "common/widget.c:16:12: error: implicit declaration of function 'frob_helper'"
        " [-Werror=implicit-function-declaration]\n"
        "common/widget.c:20:5: warning: 'x' may be used uninitialized [-Wmaybe-uninitialized]\n"
        "cc1: all warnings being treated as errors\n"
    )
    diags = parse_diagnostics(out, cwd, root)
    assert [d.text() for d in diags] == [
        "xen/include/xen/widget.h:3: error: unknown type name 'bogus_t'",
        "xen/common/widget.c:14: error: unused variable 'spare' [-Werror=unused-variable]",
        "xen/common/widget.c:16: error: implicit declaration of function 'frob_helper'"
        " [-Werror=implicit-function-declaration]",
        "xen/common/widget.c:20: warning: 'x' may be used uninitialized [-Wmaybe-uninitialized]",
    ]
    assert [d.kind for d in diags] == ["error", "warning", "warning", "warning"]
    assert [d.option for d in diags][1:] == ["-Wunused-variable",
                                             "-Wimplicit-function-declaration",
                                             "-Wmaybe-uninitialized"]
    assert [d.function for d in diags] == ["", "frob", "frob", "frob"]


def test_new_diagnostics_ignore_line_shifts_and_count_copies(tmp_path):
    from verifier.build import CompileResult, Diagnostic

    def res(*lines: tuple[int, str]) -> CompileResult:
        return CompileResult("xen/a.c", 1, tuple(
            Diagnostic("xen/a.c", n, "warning", msg, "-Wx", "f") for n, msg in lines), "")

    base = res((10, "unused variable 'a'"))
    patched = res((14, "unused variable 'a'"), (20, "unused variable 'a'"), (30, "other"))
    assert [(d.line, d.message) for d in new_diagnostics(base, patched)] == [
        (20, "unused variable 'a'"), (30, "other")]


def test_compile_command_is_found_in_kbuild_and_rules_mk_dry_runs(tmp_path):
    root = tmp_path
    kbuild = (
        "make -f ./Rules.mk obj=arch/x86 arch/x86/mm.o\n"
        "set -e;  echo '  gcc -O2 -c arch/x86/mm.c -o arch/x86/.mm.o.tmp -MQ arch/x86/mm.o';"
        " gcc -MMD -MF arch/x86/.mm.o.d -O2 '-D__OBJECT_LABEL__=arch/x86/mm.o' -c arch/x86/mm.c"
        " -o arch/x86/.mm.o.tmp -MQ arch/x86/mm.o; tools/fixdep arch/x86/.mm.o.d arch/x86/mm.o"
        " 'gcc -c arch/x86/mm.c'\n"
    )
    cmd = parse_compile_command(kbuild, "xen/arch/x86/mm.c", root, "xen/arch/x86/mm.o")
    assert cmd is not None and cmd.cwd == root / "xen"
    assert cmd.argv[0] == "gcc" and "-D__OBJECT_LABEL__=arch/x86/mm.o" in cmd.argv
    argv = cmd.compile_argv(tmp_path / "out.o")
    assert "-MMD" not in argv and "-MQ" not in argv and argv[-2:] == ["-o", str(tmp_path / "out.o")]
    rules = (
        f"make[1]: Entering directory '{root}/xen'\n"
        f"make[2]: Entering directory '{root}/xen/arch/x86/mm/shadow'\n"
        "gcc -O2 -DGUEST_PAGING_LEVELS=2 -c multi.c -o guest_2.o\n"
        "gcc -O2 -DGUEST_PAGING_LEVELS=3 -c multi.c -o guest_3.o\n"
        f"make[2]: Leaving directory '{root}/xen/arch/x86/mm/shadow'\n"
        "gcc -O2 -c common/other.c -o common/other.o\n"
    )
    src = "xen/arch/x86/mm/shadow/multi.c"
    g3 = parse_compile_command(rules, src, root, "xen/arch/x86/mm/shadow/guest_3.o")
    assert g3 is not None and "-DGUEST_PAGING_LEVELS=3" in g3.argv
    assert g3.cwd == root / "xen/arch/x86/mm/shadow"
    assert parse_compile_command(rules, "xen/multi.c", root) is None  # not the cwd's multi.c


# --------------------------------------------------------------------------- BUILD, end to end


def _repo(tmp_path: Path, widget_c: str = WIDGET_C) -> Path:
    repo = tmp_path / "repo"
    write_tree(repo)
    (repo / "xen/common/widget.c").write_text(widget_c)
    toyrepo.git(repo, "init", "-q", "-b", "master")
    toyrepo.git(repo, "add", "-A")
    toyrepo.git(repo, "commit", "-q", "-m", "mini tree")
    return repo


def _patch(tmp_path: Path, repo: Path, new_text: str, name: str) -> Path:
    (repo / "xen/common/widget.c").write_text(new_text)
    diff = toyrepo.git(repo, "diff") + "\n"
    toyrepo.git(repo, "checkout", "-q", "--", ".")
    p = tmp_path / f"{name}.patch"
    p.write_text("From: Toy Author <toy@example.org>\n"
                 f"Subject: [PATCH] widget: {name}\n\n---\n" + diff)
    return p


def _build_check(tmp_path: Path, repo: Path, patch: Path):
    from verifier.patch import load_series
    from verifier.pipeline import verify
    from verifier.tree import open_tree

    cache = tmp_path / "cache"
    source = open_tree(str(repo), cache)
    report = verify(load_series([str(patch)]), [(source, ["master"])], cache, command="test")
    (run,) = report.runs
    (check,) = [c for c in run.checks if c.id == "BUILD"]
    assert check.pack == "generic"
    return run, check


def test_build_passes_on_a_harmless_patch(tmp_path):
    repo = _repo(tmp_path)
    patch = _patch(tmp_path, repo, WIDGET_C.replace("twice + 1", "twice + 2"), "harmless")
    run, check = _build_check(tmp_path, repo, patch)
    assert (check.base, check.patched, check.change) == (Outcome.PASS, Outcome.PASS, "pass")
    assert "xen/common/widget.c: compiles" in check.detail
    assert str(run.verdict) == "pass"
    assert any("defconfig, and on: CONFIG_PV, CONFIG_HVM, CONFIG_SHADOW_PAGING" in n
               for n in run.notes), run.notes


def test_build_fails_on_an_undeclared_helper_with_file_line(tmp_path):
    repo = _repo(tmp_path)
    text = WIDGET_C.replace("    return twice + 1;", "    return frob_helper(twice);")
    line = text.splitlines().index("    return frob_helper(twice);") + 1
    patch = _patch(tmp_path, repo, text, "helper")
    run, check = _build_check(tmp_path, repo, patch)
    assert (check.base, check.patched, check.change) == (Outcome.PASS, Outcome.FAIL, "REGRESSION")
    assert f"xen/common/widget.c:{line}" in check.evidence.locations
    assert "frob_helper" in check.detail and "-Werror" in check.detail
    assert str(run.verdict) == "fail"


def test_build_fails_on_a_real_error(tmp_path):
    repo = _repo(tmp_path)
    patch = _patch(tmp_path, repo, WIDGET_C.replace("twice + 1;", "twice + 1"), "syntax")
    _, check = _build_check(tmp_path, repo, patch)
    assert check.patched is Outcome.FAIL
    assert "1 error(s)" in check.detail and "xen/common/widget.c:" in check.detail


def test_build_names_a_new_warning_and_not_one_base_already_had(tmp_path):
    repo = _repo(tmp_path)
    new = _patch(tmp_path, repo, WIDGET_C.replace("    int twice = x * 2;\n",
                                                  "    int twice = x * 2;\n    int spare;\n"),
                 "warn")
    _, check = _build_check(tmp_path, repo, new)
    assert check.patched is Outcome.FAIL
    assert "new warning" in check.detail and "unused variable 'spare'" in check.detail

    # The same warning on base, moved down by the patch: the compiler's, not the patch's.
    old_warning = WIDGET_C.replace("    int twice = x * 2;\n",
                                   "    int twice = x * 2;\n    int spare;\n")
    repo2 = _repo(tmp_path / "two", old_warning)
    shifted = _patch(tmp_path, repo2, "/* a comment\n * moves everything down */\n" + old_warning,
                     "shift")
    _, check2 = _build_check(tmp_path / "two", repo2, shifted)
    assert (check2.base, check2.patched) == (Outcome.PASS, Outcome.PASS)
    assert "raises on base too" in check2.detail


def test_build_is_na_with_the_reason_when_the_tree_cannot_be_prepared(tmp_path):
    repo = _repo(tmp_path)
    (repo / "xen/arch/x86/asm-offsets.c").write_text("void dummy(void) { oops }\n")
    toyrepo.git(repo, "commit", "-qam", "break the header step")
    patch = _patch(tmp_path, repo, WIDGET_C.replace("twice + 1", "twice + 2"), "harmless")
    run, check = _build_check(tmp_path, repo, patch)
    assert (check.base, check.patched) == (Outcome.NA, Outcome.NA)
    assert "could not be prepared" in check.detail and "asm-offsets" in check.detail
    assert str(run.verdict) == "not-applicable"


def test_a_compile_is_reused_only_for_the_same_text(tmp_path):
    tree = prepare_tree(write_tree(tmp_path / "a"), tmp_path / "cache")
    unit = "xen/common/widget.c"
    first = compile_unit(tree, unit)
    again = compile_unit(tree, unit)
    assert not first.cached and again.cached
    assert again.diagnostics == first.diagnostics and again.returncode == first.returncode
    (tmp_path / "a" / unit).write_text(WIDGET_C.replace("int twice", "int spare;\n    int twice"))
    changed = compile_unit(tree, unit)
    assert not changed.cached and changed.returncode != 0
    assert [d.message for d in changed.diagnostics] == ["unused variable 'spare'"]


def test_touched_units_are_hypervisor_c_only():
    from verifier.generic.build_check import touched_units
    from verifier.model import FileChange, Patch, PatchMeta, PatchSeries

    files = (FileChange("xen/common/a.c", "xen/common/a.c"),
             FileChange(None, "xen/arch/x86/new.c"),  # added: only on patched
             FileChange("xen/common/gone.c", None),  # deleted: nothing to build
             FileChange("xen/include/xen/a.h", "xen/include/xen/a.h"),
             FileChange("xen/tools/symbols.c", "xen/tools/symbols.c"),  # a host tool
             FileChange("tools/libs/ctrl/x.c", "tools/libs/ctrl/x.c"))
    series = PatchSeries((Patch(PatchMeta("s", "p", "diff"), "", files),))
    assert touched_units(series) == ["xen/common/a.c", "xen/arch/x86/new.c"]


def test_build_judges_a_new_unit_on_patched_alone(tmp_path):
    repo = _repo(tmp_path)
    (repo / "xen/common/extra.c").write_text("#include <xen/widget.h>\n\n"
                                             "int extra(void)\n{\n    return frob(1);\n}\n")
    toyrepo.git(repo, "add", "-N", "xen/common/extra.c")
    diff = toyrepo.git(repo, "diff") + "\n"
    toyrepo.git(repo, "reset", "-q")
    (repo / "xen/common/extra.c").unlink()
    patch = tmp_path / "extra.patch"
    patch.write_text("From: Toy Author <toy@example.org>\nSubject: [PATCH] add extra\n\n---\n"
                     + diff)
    _, check = _build_check(tmp_path, repo, patch)
    assert (check.base, check.patched) == (Outcome.NA, Outcome.PASS)
    assert "new unit (patched only)" in check.detail


def test_build_on_an_already_applied_patch_judges_the_tree_as_it_is(tmp_path):
    repo = _repo(tmp_path)
    text = WIDGET_C.replace("twice + 1", "twice + 2")
    patch = _patch(tmp_path, repo, text, "harmless")
    (repo / "xen/common/widget.c").write_text(text)
    toyrepo.git(repo, "commit", "-qam", "widget: harmless")
    run, check = _build_check(tmp_path, repo, patch)
    assert str(run.apply.status) == "already-applied"
    assert (check.base, check.patched) == (Outcome.NA, Outcome.PASS)


def test_a_unit_the_configuration_leaves_out_says_so(tmp_path: Path) -> None:
    """xen/common/dt-overlay.c is Arm's (CONFIG_OVERLAY_DTB): on x86 it is not built, and
    BUILD and BALANCE say that instead of a compile error. Made-up Makefiles."""
    from verifier.build import not_configured

    (tmp_path / "xen/common").mkdir(parents=True)
    (tmp_path / "xen/arch/x86/hvm/svm").mkdir(parents=True)
    (tmp_path / "xen/.config").write_text("CONFIG_HVM=y\nCONFIG_AMD_SVM=y\n")
    (tmp_path / "xen/common/Makefile").write_text(
        "obj-y += memory.o\nobj-$(CONFIG_OVERLAY_DTB) += dt-overlay.o\n"
        "obj-$(CONFIG_HVM) += \\\n\thvm-only.o\n")
    (tmp_path / "xen/arch/x86/hvm/Makefile").write_text("obj-$(CONFIG_AMD_SVM) += svm/\n")
    (tmp_path / "xen/arch/x86/Makefile").write_text("obj-$(CONFIG_NEVER) += other/\n")
    (tmp_path / "xen/arch/x86/hvm/svm/Makefile").write_text("obj-y += svm.o\n")
    why = not_configured(tmp_path, "xen/common/dt-overlay.c")
    assert "xen/common/Makefile" in why and "CONFIG_OVERLAY_DTB" in why
    assert not_configured(tmp_path, "xen/common/memory.c") == ""
    assert not_configured(tmp_path, "xen/common/hvm-only.c") == ""  # continued line, set
    assert not_configured(tmp_path, "xen/arch/x86/hvm/svm/svm.c") == ""
    (tmp_path / "xen/.config").write_text("CONFIG_HVM=y\n")
    assert "CONFIG_AMD_SVM" in not_configured(tmp_path, "xen/arch/x86/hvm/svm/svm.c")
