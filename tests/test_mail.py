"""report.md for a mail: the seed's four-ref run shape, made up, within 150 lines and 80
columns, stating every fact (tests/mailfacts.py); and the real run (upstream)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mailfacts import fact_problems, flat, size_problems
from verifier.model import (
    ApplyResult,
    ApplyStatus,
    CheckResult,
    FileChange,
    Finding,
    HunkResult,
    Match,
    Outcome,
    PackLimits,
    Patch,
    PatchMeta,
    PatchSeries,
    Prerequisite,
    Report,
    RunResult,
    overall_verdict,
    run_verdict,
)
from verifier.report import _markdown, render_markdown

P, F = Outcome.PASS, Outcome.FAIL
ROOT = Path(__file__).resolve().parent.parent

TRACE = " ; ".join(["reset(8 toys, wide, flags=0)", "pin_toy(4) -> 0", "hold_toy_lock(4)",
                    "set_preempt('always')"] + ["set_info(vcpu=0, flags=strict) -> -EAGAIN "
                                                "[walked 256]"] * 3 + ["... (continuations)"])
LIVELOCK = ("With nr_toys > 0 and the only toy's lock unavailable, each invocation returned "
            "-EAGAIN after at most 256 toys but the walk never completed (does not terminate: "
            "still -EAGAIN after 37 invocations, 9472 toys walked). With preemption never "
            "pending a single invocation would spin. The walk ends only on meeting a filled "
            "toy. Trace: " + TRACE + " ; ... still -EAGAIN after 37 invocations")
LIVELOCK2 = LIVELOCK.replace("the only toy's lock unavailable",
                             "the only toy's release preempted (still counted)")
COUNTER = ("Releasing a toy whose setup was preempted (never counted) took nr_toys from 1 to "
           "0; the set-up toys number 1. The releaser decrements on any success, whether or "
           "not the setup it undoes had completed. A partial setup is released this way when "
           "it failed after progress or when the box is destroyed. Trace: reset(4 toys) ; "
           "pin_toy(1) -> 0 ; inject(get_toy, entry=9, rc=-EAGAIN) ; pin_toy(2) -> -EAGAIN ; "
           "unpin_toy(2) -> 0")
STOPS = ("With toy 2's slot already {v} and toys [4, 6] empty, the walk stopped after 3 toys "
         "and left [4, 6] without the slot: termination assumes every slot holds either 0 or "
         "the shared entry and that filled toys are met only after a full round.")


def cost_table(revisions: list[str], walked: int) -> tuple[tuple[str, ...], ...]:
    head = ("revision", "order", "toys", "slots", "preemption", "calls", "walked",
            "max per call", "on continuations", "on repeat")
    rows = []
    for rev in revisions:
        for order in ("legacy", "v2"):
            for size, pre in ((64, "never"), (64, "always"), (1024, "never"),
                              (1024, "always"), (16384, "never")):
                w = walked if rev.startswith("patched") and order == "legacy" else 0
                calls = "5" if (w and pre == "always" and size == 1024) else "1"
                rows.append((rev, order, str(size), "8", pre, calls, str(w * size // 64),
                             str(w * size // 64), "0", str(w)))
    return (head, *rows)


def callers(lines: tuple[int, int, int, int]) -> tuple[tuple[str, ...], ...]:
    return (("caller", "function", "use", "judgement"),
            (f"hv/arch/box/setup.c:{lines[0]}", "box_set_info_guest", "boolean",
             "uses the result as 'an empty slot was filled'"),
            (f"hv/arch/box/setup.c:{lines[1]}", "box_set_info_guest", "ignored",
             "fine: needs only the fill"),
            (f"hv/arch/box/toys.c:{lines[2]}", "new_guest_table", "ignored",
             "fine: needs only the fill"),
            (f"hv/arch/box/toys/shadow/multi.c:{lines[3]}", "shadow_update_table", "ignored",
             "fine: needs only the fill"))


def checks(ref: str, fixed: bool, revisions: list[str], walked: int,
           lines: tuple[int, int, int, int], bool_t: str) -> tuple[CheckResult, ...]:
    def c(i: int, title: str, base: Outcome = P, *findings: Finding, detail: str = "") \
            -> CheckResult:
        return CheckResult(f"P{i}", title, base, P, detail or f"{i + 2} scenarios passed",
                           findings=findings, pack="toy-strict")
    return (
        c(1, "Legacy restore order: every toy gets the slot", F if fixed else P,
          detail=("patched: 3 scenarios passed | base: 1 of 1 scenarios failed; legacy "
                  "restore: after the restore: 2 of 2 set-up toys lack the slot") if fixed
          else ""),
        c(2, "Migration-v2 order: same end state"),
        c(3, "Preemption, termination, lock balance, list integrity", P,
          Finding("Restore walk livelocks when no counted toy can be locked", LIVELOCK),
          Finding("Restore walk livelocks when no counted toy can be locked", LIVELOCK2)),
        c(4, "Cost: toys walked per restore and continuation", P,
          Finding("Toys walked during restore",
                  f"legacy order walks {walked} toys for 64; v2 order walks nothing.",
                  cost_table(revisions, walked))),
        c(5, "Repeated vCPU 0 set-context", P,
          Finding("Cost of repeating vCPU 0's context",
                  f"8 toys, 3 repeats: toys walked per repetition [{walked}, 5, 3]; 1000 "
                  f"toys, 3 repeats with preemption pending: [{walked}, 111, 111]")),
        c(6, "Setup contract and nr_toys accounting", P,
          Finding("nr_toys moves for a toy that was never counted", COUNTER)),
        c(7, "Walk termination assumption (pre-filled toy)", P,
          Finding("Restore walk stops at a pre-filled toy", STOPS.format(v="the shared entry")),
          Finding("Restore walk stops at a pre-filled toy", STOPS.format(v="0x12345067")),
          Finding("Toy set up while strict was cleared again stays without the slot",
                  "After strict was set, cleared and set again, toy [7] set up in between "
                  "kept an empty slot (walk of 4 toys stopped at a filled toy ahead of it).")),
        c(8, "Scope: own context, 32-bit and HVM untouched"),
        c(9, "Callers of fill_slot after its contract change", P,
          Finding("fill_slot callers",
                  f"fill_slot returns {bool_t} (hv/arch/box/toys.c:{lines[2] - 1400}); 4 "
                  "callers: 1 use the result, 3 ignore it and only need the fill (it now "
                  "leaves a non-empty slot alone: they rely on P7's assumption).",
                  callers(lines))),
    )


def seed_like() -> Report:
    meta = PatchMeta(subject="box/toys: fix unintended dependency of strict mode on v2",
                     source="patches/toy-strict-v1.patch", kind="format-patch",
                     author="Ann Reviewer <ann@example.org>", date="2016-01-12T10:08:00+00:00",
                     message_id="<toy-strict-1@example.org>")
    patch = Patch(meta, "", (FileChange("hv/arch/box/setup.c", "hv/arch/box/setup.c"),))
    limits = PackLimits("toy-strict", verbatim=("box_set_info_guest setup.c", "fill_slot"),
                        modelled=("toy locks: flags", "preemption: scripted"),
                        parameters=("8, 1024 and 16384 toys",),
                        not_exercised=("SMP races",))

    def run(ref: str, apply: ApplyResult, found: tuple[CheckResult, ...] = (),
            notes: tuple[str, ...] = ()) -> RunResult:
        return RunResult(ref, (ref[0] * 40).replace("^", "a"), f"commit at {ref}",
                         "git /src/toys", apply, found, run_verdict(apply, found), notes,
                         (limits,) if found else ())

    proof = ("toy-strict mutation proof: P1 fails with the fixup disabled: after the "
             "restore: 2 of 2 set-up toys lack the slot (toy 1: empty, toy 3: empty)")
    runs = (
        run("rev^", ApplyResult(ApplyStatus.OFFSETS, "applies with offsets: setup.c hunk #1 +8",
                                hunks=(HunkResult("hv/arch/box/setup.c", 1, "@@ -1067 @@ int "
                                                  "box_set_info_guest(", 1067, 1075, 8,
                                                  "offset"),)),
            checks("rev^", True, ["base (0123456789ab)", "patched (worktree)"], 81,
                   (1102, 1174, 2871, 4135), "bool_t")),
        run("stable-a", ApplyResult(ApplyStatus.ALREADY_APPLIED,
                                    "already applied in another form: cccccccccccc by subject",
                                    matches=(Match("subject", "c" * 40, meta.subject),)),
            checks("stable-a", False, [""], 81, (1144, 1218, 3136, 4120), "bool_t"),
            (proof,)),
        run("stable-b", ApplyResult(
            ApplyStatus.MISSING_PREREQUISITE,
            "missing prerequisite: the ref lacks fill_slot, strict; introduced by dddddddddd",
            prerequisites=(Prerequisite("fill_slot", "hv/arch/box/setup.c", "d" * 40, "add"),
                           Prerequisite("strict", "hv/arch/box/setup.c", "d" * 40, "add")))),
        run("main", ApplyResult(ApplyStatus.ALREADY_APPLIED,
                                "already applied in another form: eeeeeeeeeeee by subject",
                                moved_files=(("hv/include/box/toys.h", "hv/arch/box/toys.h"),)),
            checks("main", False, [""], 81, (1457, 1531, 3366, 3281), "bool"), (proof,)),
    )
    return Report(PatchSeries((patch,)), runs, "xen-verify check patches/toy-strict-v1.patch "
                  "--repo /src/toys --ref 'rev^' --ref stable-a --ref stable-b --ref main "
                  "--report-dir out", overall_verdict(runs))


def test_seed_shaped_report_fits_a_mail_and_states_every_fact() -> None:
    report = seed_like()
    md = render_markdown(report)
    assert size_problems(md) == []
    assert fact_problems(report, md) == []
    # grouped: a finding that holds on three refs is written once, naming them
    assert md.count("Restore walk livelocks when no counted toy can be locked") == 1
    assert flat(md).count(flat(COUNTER)) == 1
    # summary first, regressions/fixes before findings, apply detail in the appendix
    order = [md.index(s) for s in ("| ref ", "## Fixed by the patch", "## Findings",
                                   "## Limits", "## Appendix", "Reproduce:")]
    assert order == sorted(order)
    assert "toy-strict: ran verbatim: box_set_info_guest setup.c; fill_slot." in flat(md)


def test_fact_check_catches_a_dropped_fact() -> None:
    """The comparison has teeth: a report.md missing a finding or an outcome fails it."""
    report = seed_like()
    md = render_markdown(report)
    assert fact_problems(report, md.replace("the walk never completed", "it completed"))
    assert fact_problems(report, md.replace("fixed P1, pass P2-P9", "pass P1-P9"))
    assert fact_problems(report, md.replace("applies with offsets", "applies"))


def test_longest_report_packs_the_legend_and_leaves_hunk_lines_to_html() -> None:
    """Four more refs (eight): past every other cut the check legend becomes a paragraph,
    and appendix lines that repeat the apply detail are left to report.html."""
    report = seed_like()
    first = report.runs[0]
    extra = [RunResult(**{**first.__dict__, "ref": f"stable-{n}", "checks": checks(
        f"stable-{n}", True, ["base (0123456789ab)", "patched (worktree)"], 90 + n,
        (1102 + n, 1174, 2871, 4135), "bool_t")}) for n in range(4)]
    runs = (*report.runs, *extra)
    six = Report(report.series, runs, report.command, overall_verdict(runs))
    md = render_markdown(six)
    assert fact_problems(six, md) == []
    # the last cut: shorter than the one before it, and within 80 columns
    before = _markdown(six, tables=False, full_limits=False, brief_accepted=True)
    assert md.count("\n") < before.count("\n") - 10
    assert [p for p in size_problems(md) if "lines (at most" not in p] == []
    assert "Checks: P1 " in md and "\n- P1 " not in md  # the legend, packed
    assert "(box_set_info_guest): line 1067 -> 1075" not in md  # the hunk line: in html
    assert "each hunk's lines and each prerequisite's uses." in flat(md)
    # the ref that ran no check keeps its row in the summary table only
    assert sum(ln.startswith("| stable-b ") for ln in md.splitlines()) == 1


def test_findings_tables_kept_when_the_mail_is_short() -> None:
    """Under the line budget the finding tables stay, pivoted or one line per row."""
    report = seed_like()
    one = RunResult(**{**report.runs[0].__dict__})
    small = Report(report.series, (one,), report.command, overall_verdict((one,)))
    md = render_markdown(small)
    assert "Each revision cell: calls/walked/max per call/on continuations/on repeat." in \
        flat(md)
    assert "Columns: caller | function | use | judgement" in md
    assert size_problems(md) == []


@pytest.mark.upstream
def test_seed_on_four_upstream_refs(tmp_path: Path) -> None:
    xen = os.environ.get("XEN_GIT")
    if not xen:
        pytest.skip("XEN_GIT is not set: no upstream Xen clone to check the seed against")
    from verifier.cli import main
    from verifier.merge import load_report

    out = tmp_path / "out"
    rc = main(["check", str(ROOT / "patches" / "m2p-strict-v1.patch"), "--repo", xen,
               "--ref", "be05b5385f^", "--ref", "stable-4.6", "--ref", "stable-4.5",
               "--ref", "master", "--report-dir", str(out), "--cache",
               str(tmp_path / "cache"), "-q", "-j", "2"])
    assert rc == 0
    report = load_report(out)
    md = (out / "report.md").read_text()
    assert md == render_markdown(report)
    assert size_problems(md) == []
    assert fact_problems(report, md) == []
    assert [r.ref for r in report.runs] == ["be05b5385f^", "stable-4.6", "stable-4.5", "master"]
    html = (out / "report.html").read_text()
    assert "<svg" in html and "Pages walked against domain size" in html


def test_too_wide_matrix_shares_columns_and_the_fact_check_reads_them() -> None:
    from tests.mailfacts import _header_ids
    from verifier.report import _check_matrix

    ids = ["BALANCE", "BUILD", *[f"P{i}" for i in range(1, 10)]]
    same = ["ok"] * 9
    rows = [("be05b5385f^", ["n/a", "n/a", "FIX", *same[1:]]),
            ("stable-4.10", ["n/a", "ok", "ok", "ok", "dev", *same[3:]]),
            ("master", ["pass", "ok", "ok", "ok", "dev", *same[3:]])]
    table = _check_matrix(ids, rows)
    assert max(len(ln) for ln in table) <= 80
    head = _header_ids(table[0])
    assert set(head) == {"ref", *ids}
    assert table[0].strip("|").split("|")[head["P4"]].strip() == "P2,P4-P9"  # one column, by id
    for ref, cells in rows:  # every outcome still read back at its id
        row = next(ln for ln in table if ln.startswith(f"| {ref} "))
        got = [c.strip() for c in row.strip("|").split("|")]
        assert [got[head[i]] for i in ids] == cells
    # a narrow one stays a column per check
    assert _check_matrix(ids[2:5], [(r, c[2:5]) for r, c in rows])[0].count("|") == 5


def test_appendix_drops_only_the_hunks_the_detail_names() -> None:
    from verifier.model import HunkResult
    from verifier.report import _names_hunk

    h1 = HunkResult("xen/arch/x86/mm.c", 1, "@@ -1 +1 @@", 10, 18, 8, "offset")
    detail = "applies with offsets: xen/arch/x86/mm.c hunk #12 +3, xen/common/mm.c hunk #1 +8"
    assert not _names_hunk(detail, h1)  # #12 is not #1, and common/mm.c is another file
    assert _names_hunk("applies with offsets: xen/arch/x86/mm.c hunk #1 +8", h1)
    assert _names_hunk("applies with offsets: mm.c hunk #1 +8", h1)  # the bare name
