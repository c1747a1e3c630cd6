"""report.json, report.md, junit.xml and the terminal summary, from hand-built Reports."""

from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from verifier.model import (
    ApplyResult,
    ApplyStatus,
    BalanceViolation,
    CheckResult,
    Evidence,
    FileChange,
    Finding,
    FunctionResult,
    HunkResult,
    Match,
    Outcome,
    Patch,
    PatchMeta,
    PatchSeries,
    Prerequisite,
    Report,
    RunResult,
    Sides,
    Verdict,
    VerifyError,
    ViolationSides,
    overall_verdict,
    run_verdict,
)
from verifier.report import (
    SCHEMA,
    print_summary,
    render_junit,
    render_markdown,
    report_json,
    write_reports,
)

P, F, E, NA = Outcome.PASS, Outcome.FAIL, Outcome.ERROR, Outcome.NA

DIFF = """\
diff --git a/xen/arch/x86/domain.c b/xen/arch/x86/domain.c
index 1111111..2222222 100644
--- a/xen/arch/x86/domain.c
+++ b/xen/arch/x86/domain.c
@@ -10,6 +10,7 @@ int toy_set_info(struct toy *t)
     int rc = 0;
+    t->count++;
     return rc;
 }
"""

META = PatchMeta(
    subject="x86/toy: count the toys restored before their context",
    source="patches/toy.patch",
    kind="format-patch",
    author="Ann Reviewer <ann@example.org>",
    date="Tue, 26 Jan 2016 09:00:00 +0000",
    message_id="<toy-1@example.org>",
    version=2,
    trailers=(("Signed-off-by", "Ann Reviewer <ann@example.org>"),
              ("Reviewed-by", "Bob <bob@example.org>")),
    base_commit="0123456789abcdef0123456789abcdef01234567",
)
PATCH = Patch(META, DIFF, (FileChange("xen/arch/x86/domain.c", "xen/arch/x86/domain.c",
                                      "1111111", "2222222", hunks=1, added=1),))

P4_TABLE = (
    ("revision", "order", "pages", "L4s", "preemption", "calls", "walked", "max per call",
     "on continuations", "on repeat"),
    ("patched", "legacy", "4096", "64", "never", "1", "4096", "4096", "0", ""),
    ("patched", "v2", "4096", "64", "every 256", "17", "0", "0", "0", "4096,4096"),
)

TRACE = ("reset(8 pages, pv64, vm_assist=0)", "pin_l4(3)", "set_preempt('after', 2)",
         "set_context(vcpu0, m2p_strict)")


def check(cid: str, base: Outcome, patched: Outcome, **kw) -> CheckResult:
    return CheckResult(cid, f"title of {cid}", base, patched, **kw)


def sha(c: str) -> str:
    return c * 40


def run(ref: str, apply: ApplyResult, checks: tuple[CheckResult, ...] = (), **kw) -> RunResult:
    return RunResult(ref=ref, commit=kw.pop("commit", sha(ref[0].lower())),
                     subject=f"commit at {ref}", tree=kw.pop("tree", "upstream git ~/src/xen"),
                     apply=apply, checks=checks, verdict=run_verdict(apply, checks), **kw)


def hunk(status: str, offset: int = 0, applied: int | None = 10) -> HunkResult:
    header = "@@ -10,6 +10,7 @@ int toy_set_info(struct toy *t)"
    return HunkResult("xen/arch/x86/domain.c", 1, header, 10, applied, offset, status)


def full_report() -> Report:
    """One run per apply status; checks with every base/patched combination."""
    regression_ev = Evidence(trace=TRACE, state="page_alloc_lock held at return",
                             locations=("xen/arch/x86/domain.c:1180",),
                             output="harness: lock depth 1 at exit")
    checked = (
        check("P1", F, P, detail="every L4 has the slot", evidence=Evidence(trace=TRACE[:2])),
        check("P2", P, P),
        check("P3", P, F, detail="lock leaked on -ERESTART", evidence=regression_ev),
        check("P4", P, P, findings=(Finding("Pages walked during restore",
                                            "legacy order walks 4096 pages.", P4_TABLE),)),
        check("P5", F, F, detail="still corrupts on repeat",
              evidence=Evidence(trace=TRACE[:3], state="slot 256 empty")),
        check("P6", NA, F, detail="counter off by one"),
        check("P7", E, E, detail="harness did not build"),
        check("P8", NA, NA, detail="no 32-bit PV support in this tree"),
        check("P9", P, P, findings=(Finding("fill_ro_mpt callers", "2 callers."),)),
    )
    runs = (
        run("be05b5385f^", ApplyResult(ApplyStatus.OFFSETS, "applies with offsets: +12",
                                       hunks=(hunk("offset", 12, 22),),
                                       written_against="base-commit 0123456789",
                                       base_matches=False), checked,
            functions=(FunctionResult(
                name="toy_remove", file="xen/common/toy.c", lifted=True,
                paths=Sides(4, 4), change="fixed",
                violations=ViolationSides((BalanceViolation(
                    kind="leak", resource="gfn lock (get_gfn_type_access)", rc="-2 (error)",
                    choices=("get_gfn_type_access@xen/common/toy.c:10 -> *out = p2m_invalid",),
                    acquired_at="xen/common/toy.c:10", returned_at="xen/common/toy.c:12",
                    replay="replay-toy_remove-0.sh"),), ())),)),
        run("master", ApplyResult(ApplyStatus.CLEAN, "applies cleanly", hunks=(hunk("ok"),)),
            (check("P1", F, P), check("P2", P, P), check("P3", P, P))),
        run("stable-4.10", ApplyResult(ApplyStatus.CONFLICT, "conflict: domain.c hunk #1",
                                       hunks=(hunk("failed", applied=None),))),
        run("stable-4.6", ApplyResult(
            ApplyStatus.ALREADY_APPLIED, "already applied in another form",
            matches=(Match("backport-marker", commit=sha("c"), subject="x86/PV: fix m2p",
                           upstream_commit=sha("b"),
                           locations=("xen/arch/x86/domain.c:1160-1201",)),)),
            (check("P1", P, P),)),
        run("stable-4.5", ApplyResult(
            ApplyStatus.MISSING_PREREQUISITE, "missing prerequisite: nr_l4_pages",
            prerequisites=(Prerequisite("nr_l4_pages", "xen/arch/x86/mm.c", sha("9"),
                                        "x86: add the counter"),))),
        run("broken", ApplyResult(ApplyStatus.ERROR, "cannot apply: disk full")),
        run("three", ApplyResult(ApplyStatus.THREE_WAY, "applies with a 3-way merge",
                                 hunks=(hunk("three-way"),),
                                 moved_files=(("xen/include/asm-x86/mm.h",
                                               "xen/arch/x86/include/asm/mm.h"),))),
    )
    return Report(PatchSeries((PATCH,)), runs, command="xen-verify check patches/toy.patch "
                  "--repo ~/src/xen --ref 'be05b5385f^' --ref master --report-dir out",
                  verdict=overall_verdict(runs))


# --------------------------------------------------------------------------- report.json


def test_json_round_trips_with_every_documented_key() -> None:
    report = full_report()
    data = json.loads(json.dumps(report_json(report)))
    assert data["schema"] == SCHEMA == 2
    assert data["tool"]["name"] == "xen-verify"
    assert data["tool"]["version"]
    assert data["tool"]["command"] == report.command
    assert set(data["patch"]) == {"subject", "source", "kind", "author", "date", "message_id",
                                  "version", "trailers", "base_commit", "patches"}
    assert data["patch"]["trailers"][1] == ["Reviewed-by", "Bob <bob@example.org>"]
    assert data["patch"]["version"] == 2
    member = data["patch"]["patches"][0]
    assert member["number"] is None and member["message_id"] == "<toy-1@example.org>"
    assert member["files"][0]["path"] == "xen/arch/x86/domain.c"
    assert member["functions"] == ["toy_set_info"]
    assert data["verdict"] == "fail"
    assert [r["ref"] for r in data["runs"]] == [r.ref for r in report.runs]
    for r in data["runs"]:
        assert set(r) == {"ref", "commit", "subject", "tree", "apply", "checks", "verdict",
                          "notes", "limits", "functions"}
        assert set(r["apply"]) == {"status", "detail", "hunks", "matches", "prerequisites",
                                   "moved_files", "patches", "written_against",
                                   "base_matches", "patched_commit", "reverted"}
        for c in r["checks"]:
            assert set(c) == {"pack", "id", "title", "base", "patched", "change", "detail",
                              "evidence", "findings"}
    first = data["runs"][0]
    assert first["ref"] == "be05b5385f^" and first["commit"] == sha("b")
    assert first["apply"]["hunks"][0]["offset"] == 12
    assert first["apply"]["base_matches"] is False
    assert first["checks"][2]["evidence"]["trace"] == list(TRACE)
    assert first["checks"][1]["evidence"] is None
    assert first["checks"][3]["findings"][0]["table"][0][0] == "revision"
    statuses = [r["apply"]["status"] for r in data["runs"]]
    assert statuses == ["offsets", "clean", "conflict", "already-applied",
                        "missing-prerequisite", "error", "three-way"]
    assert data["runs"][3]["apply"]["matches"][0]["upstream_commit"] == sha("b")
    assert data["runs"][4]["apply"]["prerequisites"][0]["introduced_by"] == sha("9")
    assert data["runs"][6]["apply"]["moved_files"] == [
        ["xen/include/asm-x86/mm.h", "xen/arch/x86/include/asm/mm.h"]]
    assert [r["verdict"] for r in data["runs"]] == [
        "fail", "pass", "fail", "pass", "not-applicable", "error", "not-applicable"]


def test_json_change_labels() -> None:
    data = report_json(full_report())
    changes = {c["id"]: c["change"] for c in data["runs"][0]["checks"]}
    assert changes == {"P1": "fixed", "P2": "pass", "P3": "REGRESSION", "P4": "pass",
                       "P5": "fails as on base", "P6": "fail", "P7": "error", "P8": "n/a",
                       "P9": "pass"}


def test_json_series_members() -> None:
    second = Patch(replace(META, subject="x86/toy: second", source="s.mbox#2", number=2,
                           total=2), DIFF, PATCH.files)
    first = Patch(replace(META, source="s.mbox#1", number=1, total=2), DIFF, PATCH.files)
    apply = ApplyResult(ApplyStatus.CLEAN, "ok",
                        patches=(("a", "clean", "applies"), ("b", "clean", "applies")))
    runs = (run("master", apply),)
    report = Report(PatchSeries((first, second)), runs, "xen-verify check s.mbox",
                    overall_verdict(runs))
    data = report_json(report)
    assert data["patch"]["subject"].endswith("(+1 more)")
    assert [p["number"] for p in data["patch"]["patches"]] == [1, 2]
    assert data["runs"][0]["apply"]["patches"][1] == ["b", "clean", "applies"]
    md = render_markdown(report)
    assert "2 patches" in md and "2/2 x86/toy: second" in md
    from rich.console import Console

    buf = io.StringIO()
    print_summary(report, Console(file=buf, width=100))
    text = buf.getvalue()
    assert "Series of 2 patches:" in text and "2/2 x86/toy: second" in text
    assert "series: 1 clean, 2 clean" in text


# --------------------------------------------------------------------------- report.md


def test_markdown_summary_line_counts_refs() -> None:
    md = render_markdown(full_report())
    first = md.splitlines()[0]
    assert first.startswith("xen-verify: FAIL on 2 of 7 refs")
    assert "2 pass" in first and "1 error" in first and "2 not applicable" in first
    assert "1 regression" in first
    runs = (run("a", ApplyResult(ApplyStatus.CLEAN, "ok"), (check("P1", F, P),)),
            run("b", ApplyResult(ApplyStatus.MISSING_PREREQUISITE, "x")))
    ok = Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs))
    assert render_markdown(ok).splitlines()[0] == "xen-verify: PASS on 1 of 2 refs " \
                                                  "(1 not applicable)"


def test_markdown_patch_block_and_table() -> None:
    md = render_markdown(full_report())
    assert "Author:     Ann Reviewer <ann@example.org>, Tue, 26 Jan 2016" in md
    assert "Message-ID: <toy-1@example.org>" in md
    assert "Source:     patches/toy.patch (format-patch), v2" in md
    # one table line per ref with its short sha and apply status
    for ref, status in (("be05b5385f^", "offsets"), ("stable-4.5", "missing-prerequisite"),
                        ("stable-4.6", "already-applied")):
        rows = [ln for ln in md.splitlines() if ln.startswith(f"| {ref} ")]
        assert rows and status in rows[0] and sha(ref[0].lower())[:10] in rows[0]
    # every check id present in any run has a column; a run without it shows "-"
    header = next(ln for ln in md.splitlines() if ln.startswith("| ref") and "P9" in ln)
    assert [c.strip() for c in header.strip("|").split("|")][1:] == [f"P{i}" for i in
                                                                     range(1, 10)]
    master = next(ln for ln in md.splitlines() if ln.startswith("| master ") and "ok" in ln)
    cells = [c.strip() for c in master.strip("|").split("|")]
    assert cells[1:4] == ["FIX", "ok", "ok"] and cells[4:] == ["-"] * 6
    first = next(ln for ln in md.splitlines() if ln.startswith("| be05b5385f^ ") and "ok" in ln)
    assert "REGR" in first and "FIX" in first


def test_markdown_regressions_before_other_failures() -> None:
    md = render_markdown(full_report())
    reg = md.index("## Regressions")
    other = md.index("## Other failing checks")
    assert reg < other
    assert md.index("REGRESSION: P3 on be05b5385f^") < other
    # fails-as-on-base, fail on a n/a base and errors are the other failures
    for heading in ("fails as on base: P5", "fail: P6", "ERROR: P7"):
        assert md.index(heading) > other
    # a fixed check is not a failure
    assert "P1 on be05b5385f^" in md[md.index("## Fixed by the patch"):]
    assert not re.search(r"#### \w+: P1 ", md)


def test_markdown_trace_state_location_and_findings() -> None:
    import dataclasses

    # the pack's part alone (the generic BALANCE section would take the mail past its
    # line budget, and the finding tables would go to report.html)
    report = full_report()
    report = dataclasses.replace(report, runs=tuple(dataclasses.replace(r, functions=())
                                                    for r in report.runs))
    md = render_markdown(report)
    block = md[md.index("REGRESSION: P3"):md.index("## Other failing checks")]
    for n, op in enumerate(TRACE, 1):
        assert f"{n}. {op}" in block
    assert block.index("1. ") < block.index("4. ")
    assert "State: page_alloc_lock held at return" in block
    assert "At: xen/arch/x86/domain.c:1180" in block
    assert "harness: lock depth 1 at exit" in block
    findings = md[md.index("## Findings"):]
    assert "Pages walked during restore" in findings
    # too wide for a mail and one revision only: a line per row, every cell kept
    assert "- patched | legacy | 4096 | 64 | never | 1 | 4096 | 4096 | 0 |" in findings
    assert findings.index("Pages walked") < findings.index("fill_ro_mpt callers")
    assert md.index("## Findings") < md.index("Reproduce:")


def test_markdown_apply_details() -> None:
    md = " ".join(render_markdown(full_report()).split())  # as read, whatever the wrapping
    assert "domain.c hunk #1 (toy_set_info): line 10 -> 22 (offset +12)" in md
    assert "hunk #1 (toy_set_info): FAILS, expected at line 10" in md
    assert (f"already there (backport-marker): {sha('c')[:12]} \"x86/PV: fix m2p\", "
            f"upstream commit {sha('b')[:12]}") in md
    assert "xen/arch/x86/domain.c:1160-1201" in md
    assert f"missing: nr_l4_pages (used in xen/arch/x86/mm.c), introduced by {sha('9')[:12]}" in md
    assert "moved: xen/include/asm-x86/mm.h is now xen/arch/x86/include/asm/mm.h" in md
    assert "this ref is NOT that base" in md
    assert "cannot apply: disk full" in md


def test_markdown_reproduce_is_the_command() -> None:
    report = full_report()
    md = render_markdown(report)
    tail = md[md.index("Reproduce:\n\n") + len("Reproduce:\n\n"):]
    # continued with backslashes within 80 columns; an option stays with its value
    assert all(len(ln) <= 80 for ln in tail.splitlines())
    assert " ".join(tail.replace("\\\n", " ").split()) == report.command
    assert not any(ln.rstrip(" \\").endswith("--ref") for ln in tail.splitlines())


def test_markdown_line_lengths() -> None:
    md = render_markdown(full_report())
    reproduce = md.index("Reproduce:")
    lines = md[:reproduce].splitlines()
    assert len(lines[0]) <= 100  # the summary line
    for ln in lines[1:]:
        if ln.startswith("|"):
            # the only table too wide for a mail is P4's ten-column finding
            assert len(ln) <= 80 or "revision" in ln or "legacy" in ln or "v2" in ln \
                or ln.startswith("| --"), ln
        else:
            assert len(ln) <= 80, ln
    # the ref/check table fits: nine checks went into a table of their own
    assert all(len(ln) <= 80 for ln in md.splitlines() if ln.startswith("| ref"))


def test_markdown_long_detail_is_wrapped_not_cut() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    path = "xen/arch/x86/" + "x" * 90 + ".c"
    runs = (run("master", ApplyResult(ApplyStatus.CLEAN, "ok"),
                (check("P3", P, F, detail=f"{words} {path}"),)),)
    md = render_markdown(Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs)))
    assert "word59" in md and path in md  # nothing lost
    long = [ln for ln in md.splitlines() if len(ln) > 80]
    assert long == [f"  {path}"]  # a single word longer than a line is not split


def test_markdown_without_checks_says_so() -> None:
    runs = (run("master", ApplyResult(ApplyStatus.CLEAN, "ok"),
                notes=("no check pack concerns the functions this patch touches",)),)
    md = render_markdown(Report(PatchSeries((PATCH,)), runs, "xen-verify check p",
                                overall_verdict(runs)))
    assert "No check pack applies" in md and "toy_set_info" in md
    header = next(ln for ln in md.splitlines() if ln.startswith("| ref"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["ref", "commit", "apply",
                                                                 "verdict"]
    md = render_markdown(Report(PatchSeries((PATCH,)), runs, "xen-verify check p --no-checks",
                                overall_verdict(runs)))
    assert "--no-checks" in md.split("Reproduce:")[0]


def test_markdown_duplicate_refs_are_told_apart() -> None:
    runs = (run("HEAD", ApplyResult(ApplyStatus.CLEAN, "ok"), tree="Debian bookworm"),
            run("HEAD", ApplyResult(ApplyStatus.CLEAN, "ok"), tree="Debian bullseye"))
    report = Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs))
    md = render_markdown(report)
    assert "HEAD [Debian bookworm]" in md and "HEAD [Debian bullseye]" in md
    suites = ET.fromstring(render_junit(report)).findall("testsuite")
    assert len({s.get("name") for s in suites}) == 2


def test_markdown_table_with_few_checks_is_one_table() -> None:
    runs = (run("master", ApplyResult(ApplyStatus.CLEAN, "ok"),
                (check("P1", F, P), check("P2", P, F))),)
    md = render_markdown(Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs)))
    headers = [ln for ln in md.splitlines() if ln.startswith("| ref")]
    assert len(headers) == 1 and "checks" in headers[0] and "verdict" in headers[0]
    row = next(ln for ln in md.splitlines() if ln.startswith("| master"))
    assert [c.strip() for c in row.strip("|").split("|")][3:] == [
        "REGRESSION P2, fixed P1", "FAIL"]


# --------------------------------------------------------------------------- junit.xml


def _counts(el: ET.Element) -> dict[str, int]:
    cases = el.iter("testcase")
    out = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for c in cases:
        out["tests"] += 1
        out["failures"] += c.find("failure") is not None
        out["errors"] += c.find("error") is not None
        out["skipped"] += c.find("skipped") is not None
    return out


def test_junit_parses_and_counts_match() -> None:
    report = full_report()
    root = ET.fromstring(render_junit(report).encode())
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [r.ref for r in report.runs]
    for s in suites:
        assert {k: int(s.get(k)) for k in ("tests", "failures", "errors", "skipped")} \
            == _counts(s)
    assert {k: int(root.get(k)) for k in ("tests", "failures", "errors", "skipped")} \
        == _counts(root)
    first = suites[0]
    # P3 regression, P5 fails as on base, P6 fails (base n/a); P7 error; P8 n/a
    assert _counts(first) == {"tests": 10, "failures": 3, "errors": 1, "skipped": 1}
    by_class = {c.get("classname"): c for c in first.findall("testcase")}
    assert by_class["P3"].get("name") == "title of P3"
    failure = by_class["P3"].find("failure")
    assert failure.get("type") == "REGRESSION"
    assert "4. set_context(vcpu0, m2p_strict)" in failure.text
    assert "xen/arch/x86/domain.c:1180" in failure.text
    assert by_class["P7"].find("error") is not None
    assert by_class["P8"].find("skipped").get("message") == "no 32-bit PV support in this tree"
    assert by_class["P1"].find("failure") is None  # fixed: passes
    props = {p.get("name"): p.get("value") for p in first.find("properties")}
    assert props["commit"] == sha("b") and props["verdict"] == "fail"


@pytest.mark.parametrize("index, element", [(1, None), (2, "failure"), (3, None),
                                            (4, "skipped"), (5, "error"), (6, None)])
def test_junit_apply_case(index: int, element: str | None) -> None:
    suite = ET.fromstring(render_junit(full_report())).findall("testsuite")[index]
    case = suite.find("testcase")
    assert case.get("classname") == "apply"
    found = [e.tag for e in case if e.tag in ("failure", "error", "skipped")]
    assert found == ([element] if element else [])


def test_junit_escapes_markup() -> None:
    runs = (run("a<&>\"b", ApplyResult(ApplyStatus.CONFLICT, "<<<<<<< & \"x\"")),)
    report = Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs))
    root = ET.fromstring(render_junit(report))
    assert root.find("testsuite").get("name") == "a<&>\"b"
    assert root.find("testsuite/testcase/failure").get("message") == "<<<<<<< & \"x\""


# --------------------------------------------------------------------------- files


def test_write_reports_atomic_and_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "deep" / "out"
    report = full_report()
    paths = write_reports(report, out)
    assert [p.name for p in paths] == ["report.json", "report.md", "report.html", "junit.xml"]
    assert sorted(os.listdir(out)) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["verdict"] == "fail"
    assert (out / "report.md").read_text() == render_markdown(report)
    ET.parse(out / "junit.xml")
    assert (out / "report.json").stat().st_mode & 0o044  # not the temp file's 0600
    inode = (out / "report.md").stat().st_ino
    runs = (run("master", ApplyResult(ApplyStatus.CLEAN, "ok"), (check("P1", F, P),)),)
    second = Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs))
    write_reports(second, out)
    assert sorted(os.listdir(out)) == ["junit.xml", "report.html", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["verdict"] == "pass"
    assert (out / "report.md").stat().st_ino != inode  # replaced, not rewritten in place


def test_write_reports_failure_keeps_old_files(tmp_path: Path, monkeypatch) -> None:
    write_reports(full_report(), tmp_path)
    before = (tmp_path / "report.json").read_text()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("verifier.report.os.replace", boom)
    with pytest.raises(VerifyError, match="No space left"):
        write_reports(full_report(), tmp_path)
    assert (tmp_path / "report.json").read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["junit.xml", "report.html", "report.json",
                                            "report.md"]


def test_write_reports_into_a_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(VerifyError, match="not a directory"):
        write_reports(full_report(), f)


# --------------------------------------------------------------------------- terminal


def test_print_summary_plain_text() -> None:
    from rich.console import Console

    buf = io.StringIO()
    print_summary(full_report(), Console(file=buf, force_terminal=False, width=120))
    text = buf.getvalue()
    assert "\x1b[" not in text  # no colour codes off a terminal
    assert text.isascii()  # nor box-drawing characters
    assert "be05b5385f^" in text and sha("b")[:10] in text
    assert "REGRESSION P3" in text and "fixed P1" in text and "3 pass" in text
    assert "missing-prerequisite" in text
    assert text.rstrip().splitlines()[-1].startswith("xen-verify: FAIL on 2 of 7 refs")


def test_print_summary_colours_on_a_terminal() -> None:
    from rich.console import Console

    buf = io.StringIO()
    print_summary(full_report(), Console(file=buf, force_terminal=True, width=120,
                                         color_system="standard"))
    assert "\x1b[" in buf.getvalue()


def test_empty_report_renders() -> None:
    report = Report(PatchSeries((PATCH,)), (), "cmd", Verdict.NOT_APPLICABLE)
    assert render_markdown(report).startswith("xen-verify: NOT-APPLICABLE: no ref was checked")
    root = ET.fromstring(render_junit(report))
    assert root.get("tests") == "0"
    assert report_json(report)["runs"] == []


def test_alike_failures_share_one_block_and_evidence_keeps_its_own() -> None:
    why = "no harness is available to run the code under test"
    checks = (check("P1", E, E, detail=why), check("P2", E, E, detail=why),
              check("P3", E, E, detail=why), check("P4", P, F, detail="x",
                                                   evidence=Evidence(trace=TRACE)),
              check("P5", P, F, detail="x", evidence=Evidence(trace=TRACE)),
              check("P6", E, E, detail="other reason"))
    runs = (run("master", ApplyResult(ApplyStatus.CLEAN, "ok"), checks),)
    md = render_markdown(Report(PatchSeries((PATCH,)), runs, "cmd", overall_verdict(runs)))
    assert md.count(why) == 1
    assert "#### ERROR: P1-P3 on master" in md
    block = md[md.index("#### ERROR: P1-P3"):md.index("#### REGRESSION: P4")]
    assert "title of P2" not in block  # titles are listed once, under the table
    # failures with evidence each keep their trace
    assert "#### REGRESSION: P4 on master" in md and "#### REGRESSION: P5 on master" in md
    assert md.count("4. set_context(vcpu0, m2p_strict)") == 2
    assert "#### ERROR: P6 on master" in md


@pytest.mark.parametrize("ids, text", [
    (["P1", "P2", "P3", "P5"], "P1-P3,P5"),
    (["P1"], "P1"),
    (["P1", "P3", "P4"], "P1,P3-P4"),
    (["P9", "P10", "X"], "P9-P10,X"),
])
def test_id_ranges(ids: list[str], text: str) -> None:
    from verifier.report import id_ranges

    assert id_ranges(ids) == text


def _documented() -> dict[str, str]:
    """SCHEMA_TABLE's first column expanded (`a.b`, `.c` -> a.b, a.c; no `[]`) -> its text."""
    from verifier.report import SCHEMA_TABLE

    rows: dict[str, str] = {}
    for line in SCHEMA_TABLE.splitlines()[2:]:
        key, value = line.strip("|").split("|", 1)
        names = [n.replace("[]", "") for n in re.findall(r"`([^`]+)`", key)]
        parent = names[0].rsplit(".", 1)[0] if "." in names[0] else ""
        for n in names:
            rows[parent + n if n.startswith(".") else n] = value
    return rows


def test_every_json_key_is_in_the_schema_table() -> None:
    data = report_json(full_report())
    rows = _documented()

    def check_level(prefix: str, obj: dict) -> None:
        for k in obj:
            path = f"{prefix}.{k}" if prefix else k
            assert path in rows or (prefix in rows and k in rows[prefix]) or any(
                r.startswith(path + ".") for r in rows), f"{path} is not documented"

    check_level("", data)
    check_level("tool", data["tool"])
    check_level("patch", data["patch"])
    # a member has "the fields above" (patch.subject ...) and its own
    assert "the fields above" in rows["patch.patches"]
    member = data["patch"]["patches"][0]
    check_level("patch.patches", {k: v for k, v in member.items() if k not in data["patch"]})
    check_level("runs", data["runs"][0])
    check_level("runs.apply", data["runs"][0]["apply"])
    check_level("runs.checks", data["runs"][0]["checks"][0])
    # and nothing is documented that the JSON lacks
    for path in rows:
        node: object = data
        for part in path.split("."):
            if isinstance(node, list):
                node = node[0]
            assert isinstance(node, dict) and part in node, path
            node = node[part]
