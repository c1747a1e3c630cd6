"""report.json read back into the model, and per-ref reports merged into one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_report import PATCH, full_report
from verifier.cli import main
from verifier.merge import load_report, merge_reports
from verifier.model import PatchSeries, Report, VerifyError, overall_verdict
from verifier.report import render_junit, render_markdown, report_json, write_reports


def _without_command(data: dict) -> dict:
    return {**data, "tool": {**data["tool"], "command": None}}


def test_report_json_loads_back_into_the_same_report(tmp_path: Path) -> None:
    report = full_report()
    write_reports(report, tmp_path)
    loaded = load_report(tmp_path)
    assert report_json(loaded) == report_json(report)
    assert loaded.runs == report.runs  # the dataclasses themselves, field for field
    assert render_markdown(loaded) == render_markdown(report)
    assert render_junit(loaded) == render_junit(report)


def _per_ref(report: Report, root: Path) -> list[Path]:
    dirs = []
    for n, r in enumerate(report.runs, 1):
        one = Report(report.series, (r,), f"xen-verify check x --ref {r.ref}",
                     overall_verdict((r,)))
        write_reports(one, root / str(n))
        dirs.append(root / str(n))
    return dirs


def test_merge_gives_what_one_multi_ref_run_gives(tmp_path: Path) -> None:
    report = full_report()
    dirs = _per_ref(report, tmp_path / "jobs")
    merged = merge_reports([(str(d), load_report(d)) for d in dirs], command=report.command)
    assert report_json(merged) == report_json(report)
    assert merged.verdict == report.verdict
    assert render_markdown(merged) == render_markdown(report)
    # the command line: exit status as a single run's (a run failed -> 1), every format
    out = tmp_path / "merged"
    rc = main(["merge", *map(str, dirs), "--report-dir", str(out), "-q"])
    assert rc == 1
    assert sorted(p.name for p in out.iterdir()) == ["junit.xml", "report.html", "report.json",
                                                    "report.md"]
    data = json.loads((out / "report.json").read_text())
    assert _without_command(data) == _without_command(report_json(report))
    assert data["tool"]["command"].startswith("xen-verify merge ")


def test_merge_keeps_the_order_given(tmp_path: Path) -> None:
    report = full_report()
    dirs = _per_ref(report, tmp_path)
    merged = merge_reports([(str(d), load_report(d)) for d in reversed(dirs)], command="m")
    assert [r.ref for r in merged.runs] == [r.ref for r in reversed(report.runs)]


def test_merge_refuses_reports_of_another_patch(tmp_path: Path) -> None:
    report = full_report()
    a, b = _per_ref(report, tmp_path)[:2]
    other = json.loads((b / "report.json").read_text())
    other["patch"]["subject"] = "another patch"
    other["patch"]["patches"][0]["subject"] = "another patch"
    (b / "report.json").write_text(json.dumps(other))
    with pytest.raises(VerifyError, match="another patch"):
        merge_reports([(str(a), load_report(a)), (str(b), load_report(b))], command="m")


@pytest.mark.parametrize("text, message", [
    ("not json", "not JSON"),
    ('{"tool": {"name": "other"}}', "not a xen-verify report.json"),
    ('{"tool": {"name": "xen-verify"}, "schema": 99}', "schema 99"),
    ('{"tool": {"name": "xen-verify", "command": "c"}, "schema": 2, "patch": {"patches": []},'
     ' "runs": [{"ref": 1}]}', "malformed"),
])
def test_bad_report_json_is_one_line(tmp_path: Path, text: str, message: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "report.json").write_text(text)
    with pytest.raises(VerifyError, match=message):
        load_report(tmp_path)
    assert main(["merge", str(tmp_path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_merge_of_a_missing_directory_is_usage_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", str(tmp_path / "nope"), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_merged_series_keeps_its_functions(tmp_path: Path) -> None:
    report = Report(PatchSeries((PATCH, PATCH)), full_report().runs[:1], "c",
                    full_report().runs[0].verdict)
    write_reports(report, tmp_path)
    loaded = load_report(tmp_path)
    assert [p.functions for p in loaded.series.patches] == [("toy_set_info",)] * 2
    assert report_json(loaded)["patch"] == report_json(report)["patch"]
