"""The typed objects passed between pipeline stages.

tree -> patch -> apply -> extract -> harness -> run -> report: each stage takes
and returns the small dataclasses defined here, and ``report`` turns them into
``report.json`` (whose keys are an interface: see README "report.json").
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


class VerifyError(Exception):
    """Bad input or an unusable environment: reported as one line, exit status 2."""


class StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


# --------------------------------------------------------------------------- patches


@dataclass(frozen=True)
class PatchMeta:
    """What the patch says about itself, carried into the report."""

    subject: str
    source: str  # the input as given: a path, "git:REV", or "path#3" for a series member
    kind: str  # "diff" | "format-patch" | "mbox" | "patchwork" | "git"
    author: str | None = None
    date: str | None = None
    message_id: str | None = None
    version: int | None = None  # 2 for "[PATCH v2]"; None when the subject does not say
    number: int | None = None  # position in a series ("[PATCH 3/7]" -> 3)
    total: int | None = None  # series length ("[PATCH 3/7]" -> 7)
    trailers: tuple[tuple[str, str], ...] = ()  # ("Signed-off-by", "Jan Beulich <...>")
    base_commit: str | None = None  # "base-commit:" trailer (b4 / format-patch --base)
    commit: str | None = None  # for git:REV, the commit the patch was taken from
    # Review thread of a patchwork page: (author, date) per comment.
    comments: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FileChange:
    """One file of a diff, as the patch names it."""

    old_path: str | None  # None for a new file
    new_path: str | None  # None for a deleted file
    old_blob: str | None = None  # "index <old>..<new>" abbreviated ids, when present
    new_blob: str | None = None
    hunks: int = 0
    added: int = 0
    removed: int = 0

    @property
    def path(self) -> str:
        return self.new_path or self.old_path or ""


@dataclass(frozen=True)
class Patch:
    """One patch: its metadata and its diff text (``git apply`` input)."""

    meta: PatchMeta
    diff: str
    files: tuple[FileChange, ...]
    message: str = ""  # commit message body, without the subject line

    @property
    def functions(self) -> tuple[str, ...]:
        """Names in the hunk headers' function context (``@@ ... @@ int f(``)."""
        from verifier.patch import hunk_functions  # late: patch.py imports this module

        return hunk_functions(self.diff)


@dataclass(frozen=True)
class PatchSeries:
    """What the user gave as positional inputs, in the order to apply."""

    patches: tuple[Patch, ...]

    @property
    def subject(self) -> str:
        if len(self.patches) == 1:
            return self.patches[0].meta.subject
        first = self.patches[0].meta
        return f"{first.subject} (+{len(self.patches) - 1} more)"


# --------------------------------------------------------------------------- trees


class TreeKind(StrEnum):
    GIT = "git"  # a local clone or bare repository, used read-only in place
    URL = "url"  # cloned into the cache, fetched on later runs
    DEBIAN = "debian"  # a Debian source package imported into a cached repository


@dataclass(frozen=True)
class TreeSource:
    """Where refs are resolved. ``git_dir`` is the repository git commands run in."""

    kind: TreeKind
    location: str  # the path, URL or suite the user gave
    git_dir: Path  # repository that resolves refs (the user's, a cache clone, an import)
    has_history: bool = True  # False for Debian imports: no upstream history to search
    description: str = ""  # "Debian bookworm xen 4.17.5+72-g01140da4e8-1"
    notes: tuple[str, ...] = ()  # e.g. "Debian patches not served: tree is upstream only"
    default_ref: str = "HEAD"
    # Repository worktrees are made from; None means git_dir. For a user's repository this
    # is a cache "shadow" borrowing its objects, so the user's .git is never written.
    worktree_repo: Path | None = None


@dataclass(frozen=True)
class Checkout:
    """One ref checked out in its own worktree."""

    source: TreeSource
    ref: str  # exactly as the user wrote it
    commit: str  # full sha it resolved to
    subject: str  # that commit's subject
    path: Path  # the worktree


# --------------------------------------------------------------------------- apply


class ApplyStatus(StrEnum):
    CLEAN = "clean"
    OFFSETS = "offsets"
    THREE_WAY = "three-way"
    CONFLICT = "conflict"
    ALREADY_APPLIED = "already-applied"
    MISSING_PREREQUISITE = "missing-prerequisite"
    ERROR = "error"


@dataclass(frozen=True)
class HunkResult:
    file: str  # path in the patch
    index: int  # 1-based hunk number within the file, as git numbers them
    header: str  # "@@ -1067,8 +1067,48 @@ int arch_set_info_guest("
    expected_line: int  # old-side start line the patch names
    applied_line: int | None = None  # where it went (None: did not apply)
    offset: int = 0
    status: str = "ok"  # "ok" | "offset" | "three-way" | "failed"
    target_file: str | None = None  # path it applied to when the file moved


@dataclass(frozen=True)
class Match:
    """Evidence that the change is already on the ref."""

    how: str  # "reverse-apply" | "backport-marker" | "patch-id" | "subject" | "lines-present"
    commit: str | None = None
    subject: str | None = None
    upstream_commit: str | None = None  # "master commit:" / "cherry picked from" target
    locations: tuple[str, ...] = ()  # "xen/arch/x86/domain.c:1160-1201"
    score: float | None = None  # fraction of the patch's added lines found (lines-present)
    # A later commit on the ref that reverted this one (the change is then not there).
    reverted_by: str | None = None
    reverted_subject: str | None = None
    # Hunks of the patch the commit left out (a partial backport): "file #n @@ ... @@".
    left_out: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prerequisite:
    """An identifier the patch needs that the ref lacks."""

    symbol: str
    used_in: str  # "xen/arch/x86/mm.c" (the patch file that uses it)
    introduced_by: str | None = None  # upstream commit sha, where history allows
    introduced_subject: str | None = None
    used_at: tuple[str, ...] = ()  # "xen/arch/x86/mm.c:1234": the added lines using it


@dataclass(frozen=True)
class ApplyResult:
    status: ApplyStatus
    detail: str  # one line a reviewer reads first
    hunks: tuple[HunkResult, ...] = ()
    matches: tuple[Match, ...] = ()
    prerequisites: tuple[Prerequisite, ...] = ()
    moved_files: tuple[tuple[str, str], ...] = ()  # (path in patch, path in tree)
    patches: tuple[tuple[str, str, str], ...] = ()  # per series member: (subject, status, detail)
    written_against: str | None = None  # base the patch names (base-commit / index blobs)
    base_matches: bool | None = None  # whether the ref is that base (None: unknown)
    patched_commit: str | None = None  # commit holding the patched tree in the worktree
    # Equivalent commits found on the ref that a later commit reverted (each names both).
    reverted: tuple[Match, ...] = ()
    # missing-prerequisite although the text applies: it was applied anyway, so that the
    # BUILD check can show what the ref lacks (the compiler's errors, file:line)
    applied_anyway: bool = False


# --------------------------------------------------------------------------- checks


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"  # the tool could not judge (never: the code under test failed)
    NA = "n/a"
    # The property does not hold, in a way the pack accepts and says why (the reason
    # is in the check's detail): shown apart from "pass", never counted as a failure.
    ACCEPTED = "accepted"


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not-applicable"
    ERROR = "error"


@dataclass(frozen=True)
class Evidence:
    """What a reviewer needs to see a failure: the shortest trace and where it points."""

    trace: tuple[str, ...] = ()  # operations, in order
    state: str = ""  # the state that went wrong
    locations: tuple[str, ...] = ()  # tree file:line involved
    output: str = ""  # harness stderr (sanitizer report, stub message), trimmed
    # harness commands that replay it (``xen-verify harness`` writes them for ``make run``)
    replay: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """Information that does not fail a run by itself (P4 cost, P7 assumption)."""

    title: str
    text: str
    table: tuple[tuple[str, ...], ...] = ()  # first row is the header


@dataclass(frozen=True)
class CheckResult:
    id: str  # "P1".."P9" (domain.md), "BUILD", "XSA242-1", ...
    title: str
    base: Outcome
    patched: Outcome
    detail: str = ""
    evidence: Evidence | None = None
    findings: tuple[Finding, ...] = ()
    pack: str = ""  # the check pack's name ("m2p-strict"), or "generic"

    @property
    def change(self) -> str:
        """OSSTest-style name of the base -> patched transition."""
        b, p = self.base, self.patched
        if p is Outcome.FAIL and b is Outcome.PASS:
            return "REGRESSION"
        if p is Outcome.PASS and b is Outcome.FAIL:
            return "fixed"
        if p is Outcome.FAIL and b is Outcome.FAIL:
            return "fails as on base"
        if p is Outcome.FAIL:
            return "fail"
        if p is Outcome.PASS:
            return "pass"
        if p is Outcome.ACCEPTED:
            return "accepted deviation"
        return str(p)


@dataclass(frozen=True)
class PackLimits:
    """What a check pack's verdicts rest on: what ran verbatim, what was modelled."""

    pack: str
    verbatim: tuple[str, ...] = ()  # tree code that ran as written ("fill_ro_mpt mm.c:1234")
    modelled: tuple[str, ...] = ()  # what stood in for the hypervisor ("page_lock: a flag")
    parameters: tuple[str, ...] = ()  # domain sizes and constants used
    not_exercised: tuple[str, ...] = ()  # what the checks cannot see, said plainly


@dataclass(frozen=True)
class PackRun:
    """What one check pack returns for one checkout."""

    checks: tuple[CheckResult, ...]
    notes: tuple[str, ...] = ()
    limits: PackLimits | None = None


@dataclass(frozen=True)
class BalanceViolation:
    """One path of a function on which a resource was not balanced (generic BALANCE)."""

    kind: str  # leak | double-acquire | release-unheld | bug | crash | sanitizer | hang
    resource: str  # "gfn lock (__get_gfn_type_access)"; "" for bug/crash/sanitizer/hang
    rc: str  # the return value and its class: "-2 (error)", "void", "abnormal"
    choices: tuple[str, ...]  # the stub answers that reach it: "callee@file:line -> value"
    acquired_at: str  # tree file:line of the acquire (release, or fault)
    returned_at: str  # tree file:line of the block the function returned from
    replay: str = ""  # a script that replays the path against the built harness


@dataclass(frozen=True)
class Sides:
    """Paths explored before the patch and with it (None: that side did not run)."""

    base: int | None = None
    patched: int | None = None


@dataclass(frozen=True)
class ViolationSides:
    """The violations found before the patch and with it."""

    base: tuple[BalanceViolation, ...] = ()
    patched: tuple[BalanceViolation, ...] = ()


@dataclass(frozen=True)
class FunctionResult:
    """One touched function under generic BALANCE: lifted or why not, paths, violations."""

    name: str
    file: str  # the unit, tree-relative
    lifted: bool
    reason: str = ""  # why not lifted / explored, or a budget note
    paths: Sides = Sides()  # paths explored: int per side
    violations: ViolationSides = ViolationSides()
    change: str = "pass"  # fixed | REGRESSION | fails as on base | pass | fail | n/a | error


@dataclass(frozen=True)
class RunResult:
    """One ref: how the patch applied, what the checks said, and the verdict."""

    ref: str
    commit: str
    subject: str
    tree: str  # TreeSource.description
    apply: ApplyResult
    checks: tuple[CheckResult, ...] = ()
    verdict: Verdict = Verdict.NOT_APPLICABLE
    notes: tuple[str, ...] = ()
    limits: tuple[PackLimits, ...] = ()  # one per pack that ran
    functions: tuple[FunctionResult, ...] = ()  # generic BALANCE, per touched function


@dataclass(frozen=True)
class Report:
    series: PatchSeries
    runs: tuple[RunResult, ...]
    command: str  # the command line that reproduces this report
    verdict: Verdict = Verdict.NOT_APPLICABLE


def run_verdict(apply: ApplyResult, checks: tuple[CheckResult, ...] | list[CheckResult]) -> Verdict:
    """A run's verdict from its apply status and its checks (see README)."""
    if apply.status is ApplyStatus.CONFLICT:
        return Verdict.FAIL
    if apply.status is ApplyStatus.MISSING_PREREQUISITE:
        return Verdict.NOT_APPLICABLE
    if apply.status is ApplyStatus.ERROR:
        return Verdict.ERROR
    # already-applied: the checks ran on the tree as it is, in the "patched" column.
    outcomes = [c.patched for c in checks if c.patched is not Outcome.NA]
    if any(o is Outcome.FAIL for o in outcomes):
        return Verdict.FAIL
    if any(o is Outcome.ERROR for o in outcomes):
        return Verdict.ERROR
    if outcomes:
        return Verdict.PASS
    return Verdict.NOT_APPLICABLE


def overall_verdict(runs: tuple[RunResult, ...] | list[RunResult]) -> Verdict:
    verdicts = [r.verdict for r in runs]
    for v in (Verdict.FAIL, Verdict.ERROR, Verdict.PASS):
        if v in verdicts:
            return v
    return Verdict.NOT_APPLICABLE


def to_jsonable(obj: Any) -> Any:
    """dataclasses/enums/paths/tuples -> JSON values, keys as the fields are named."""
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


__all__ = [
    "ApplyResult",
    "ApplyStatus",
    "BalanceViolation",
    "CheckResult",
    "Checkout",
    "Evidence",
    "FileChange",
    "Finding",
    "FunctionResult",
    "HunkResult",
    "Match",
    "Outcome",
    "PackLimits",
    "PackRun",
    "Patch",
    "PatchMeta",
    "PatchSeries",
    "Prerequisite",
    "Report",
    "RunResult",
    "Sides",
    "TreeKind",
    "TreeSource",
    "Verdict",
    "VerifyError",
    "ViolationSides",
    "overall_verdict",
    "run_verdict",
    "to_jsonable",
]
