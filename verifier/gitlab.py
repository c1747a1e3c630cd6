"""A GitLab CI child pipeline for a matrix run: one job per ref, then one that merges.

Each check job runs ``xen-verify check ... --ref REF --report-dir reports/N`` and keeps
the directory as artifacts; the merge job runs ``xen-verify merge reports/1 ...`` and
writes the report a single multi-ref run would have written (``verifier.merge``).

A ref that fails (exit status 1) marks its job as allowed to fail, so the pipeline's
status is the merge job's: the overall verdict. A tool error (2, 3) fails its job.

The YAML is written as block mappings whose scalars are JSON strings (JSON strings are
YAML double-quoted scalars): no YAML library is needed and any value is quoted safely.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from typing import Any

from verifier.pipeline import TreeRequest

CHECK_STAGE, MERGE_STAGE = "xen-verify-check", "xen-verify-merge"
REPORTS = "reports"  # per-ref report directories: reports/1, reports/2, ...
MERGED = "report"  # the merged report's directory


def _slug(ref: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", ref).strip("-")[:60] or "ref"


def _yaml(value: Any, indent: int = 0) -> list[str]:
    """Block YAML for dicts and lists of strings, numbers and booleans."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            key = str(k) if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(k)) else json.dumps(str(k))
            if isinstance(v, (dict, list)) and v:
                out.append(f"{pad}{key}:")
                out += _yaml(v, indent + 2)
            else:
                out.append(f"{pad}{key}: {json.dumps(v)}")
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (dict, list)) and v:
                inner = _yaml(v, indent + 2)
                out.append(f"{pad}- {inner[0].lstrip()}")
                out += inner[1:]
            else:
                out.append(f"{pad}- {json.dumps(v)}")
    else:
        out.append(pad + json.dumps(value))
    return out


def child_pipeline(patches: Sequence[str], trees: Sequence[TreeRequest], *,
                   xen_verify: str = "xen-verify", checks: bool = True,
                   artifacts_from: str | None = None) -> str:
    """The child pipeline's YAML for every ref of every ``--repo`` tree."""
    jobs: dict[str, Any] = {}
    names: list[str] = []
    dirs: list[str] = []
    refs = [(t, ref) for t in trees for ref in (t.refs or ["HEAD"])]
    for n, (tree, ref) in enumerate(refs, 1):
        name = f"check-{n}-{_slug(ref)}"
        out = f"{REPORTS}/{n}"
        words = [*shlex.split(xen_verify), "check", *patches, "--repo", tree.spec,
                 "--ref", ref, "--report-dir", out, "-j", "1"]
        if not checks:
            words.append("--no-checks")
        job: dict[str, Any] = {
            "stage": CHECK_STAGE,
            "script": [shlex.join(words)],
            # exit 1 is a verdict (this ref fails), not a broken job: the merge decides
            "allow_failure": {"exit_codes": [1]},
            "artifacts": {"when": "always", "paths": [f"{out}/"],
                          "reports": {"junit": f"{out}/junit.xml"}},
        }
        if artifacts_from:
            job["needs"] = [{"pipeline": "$PARENT_PIPELINE_ID", "job": artifacts_from}]
        jobs[name] = job
        names.append(name)
        dirs.append(out)
    merge = [*shlex.split(xen_verify), "merge", *dirs, "--report-dir", MERGED]
    jobs["merge"] = {
        "stage": MERGE_STAGE,
        "when": "always",
        "needs": [{"job": n, "artifacts": True} for n in names],
        "script": [shlex.join(merge)],
        "artifacts": {"when": "always", "paths": [f"{MERGED}/"],
                      "expose_as": "xen-verify report",
                      "reports": {"junit": f"{MERGED}/junit.xml"}},
    }
    head = ["# GitLab CI child pipeline written by `xen-verify plan`: one job per ref,",
            "# then a job that merges their reports into one (report/)."]
    body = [*head, *_yaml({"stages": [CHECK_STAGE, MERGE_STAGE]})]
    for name, job in jobs.items():
        body += ["", *_yaml({name: job})]
    return "\n".join([*body, ""])


__all__ = ["child_pipeline"]
