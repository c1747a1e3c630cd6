"""Check packs: what to extract, which properties to check, and how to recognise a patch.

A pack is declarative (roles, functions it concerns, checks with titles) plus the
scenario code that runs its checks (``run``). ``packs_for(series)`` picks the packs a
patch series concerns, from the functions its hunks touch and the identifiers its
diff mentions; ``Pack.concerns_tree(path)`` says whether a tree has the code at all.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.model import PackRun, Patch, PatchSeries, VerifyError


@dataclass(frozen=True)
class Pack:
    name: str
    title: str
    roles: tuple[Any, ...]  # declaration.Role
    functions: tuple[str, ...]  # a patch touching one of these concerns the pack
    keywords: tuple[str, ...]  # identifiers whose mention in a diff also does
    checks: tuple[Any, ...]  # declaration.CheckSpec: id, title
    run: Callable[..., list]  # run_pack(base, patched, tree_dir, *, exhaustive=False)
    mutation_proof: Callable[..., Any] | None = None
    files: tuple[str, ...] = ()  # tree files the roles live in
    # (checkout, *, applied, cache, factory, exhaustive) -> PackRun: the pipeline's entry
    on_checkout: Callable[..., PackRun] | None = None
    # (checkout, out_dir, *, patched, cache, mutate) -> (dir, harness key, replay files):
    # what ``xen-verify harness`` writes for this pack
    on_harness: Callable[..., tuple[Path, str, list[Path]]] | None = None

    def run_on_checkout(self, co: Any, *, applied: bool, cache: Path,
                        exhaustive: bool = False) -> PackRun:
        """Run the pack on a checked-out ref: base (its commit) vs the tree in the worktree."""
        if self.on_checkout is None:
            return PackRun((), (f"check pack {self.name} cannot run on a checkout",))
        return self.on_checkout(
            co, applied=applied, cache=cache, factory=TARGET_FACTORIES.get(self.name),
            exhaustive=exhaustive,
        )

    def concerns(self, patch: Patch) -> bool:
        """Whether a patch touches this pack's functions (hunk context or diff text)."""
        if set(patch.functions) & set(self.functions):
            return True
        changed = [
            ln[1:]
            for ln in patch.diff.splitlines()
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))
        ]
        words = set(self.functions) | set(self.keywords)
        return any(re.search(rf"\b{re.escape(w)}\b", ln) for ln in changed for w in words)

    def concerns_tree(self, tree_dir: Path) -> bool:
        """Whether the tree holds code this pack checks (its role files and keywords)."""
        for rel in self.files:
            path = Path(tree_dir) / rel
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if any(k in text for k in self.keywords):
                return True
        return False


# How a pack gets a live target for a tree: name -> factory(tree_dir, *, revision, cache,
# mutate=None) returning a Target (closed with ``close()`` when it has one). The harness
# registers its factory here; ``mutate="no-fixup"`` asks for the restore fixup disabled.
TARGET_FACTORIES: dict[str, Callable[..., Any]] = {}


def register_target_factory(pack: str, factory: Callable[..., Any]) -> None:
    TARGET_FACTORIES[pack] = factory


ENTRY_POINT_GROUP = "xen_verify.packs"  # an installed distribution's packs: name = "mod:PACK"


def all_packs() -> list[Pack]:
    """Every pack, found rather than listed: each subpackage of ``verifier.packs`` that
    exports ``PACK``, then each ``xen_verify.packs`` entry point; sorted by name.

    Adding a pack is adding its folder: nothing here names one. Where two share a name,
    the first found (the folder) is kept.
    """
    return list(_discover())


@functools.lru_cache(maxsize=1)
def _discover() -> tuple[Pack, ...]:
    found: dict[str, Pack] = {}
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if not info.ispkg:
            continue
        pack = getattr(importlib.import_module(info.name), "PACK", None)
        if isinstance(pack, Pack):
            found.setdefault(pack.name, pack)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            pack = ep.load()
        except Exception as e:  # a broken third-party pack: one line naming it, no traceback
            raise VerifyError(f"check pack entry point {ep.name} ({ep.value}) does not load: "
                              f"{e}") from None
        if not isinstance(pack, Pack):
            raise VerifyError(f"check pack entry point {ep.name} ({ep.value}) is not a Pack")
        found.setdefault(pack.name, pack)
    return tuple(found[n] for n in sorted(found))


def packs_for(series: PatchSeries) -> list[Pack]:
    """The packs any patch of the series concerns, in registry order."""
    return [p for p in all_packs() if any(p.concerns(x) for x in series.patches)]


__all__ = ["TARGET_FACTORIES", "Pack", "all_packs", "packs_for", "register_target_factory"]
