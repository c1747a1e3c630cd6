"""The resource model: Xen's acquire/release pairs, as data (``resources/*.toml``).

One file per family. Each ``[[acquire]]``/``[[release]]`` names the functions (the
external symbols, or the overlay's hook names for static inline fast paths), how the
resource is keyed (``arg0``, ``arg0,arg1``, ``rv``, ``rv&page``, ``sym:NAME``,
``const:NAME`` for one count per family), when
an acquire holds (``always``, ``rc != 0``, ``rc == 0``) and the return alternatives
the driver should try. ``[[query]]`` only sets return alternatives. A callee the model
lacks gets alternatives from its type (``explore.type_alternatives``).

Adding a family is adding a file: no code changes.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RESOURCES = Path(__file__).resolve().parent / "resources"


@dataclass(frozen=True)
class Rule:
    kind: str  # "acquire" | "release" | "query"
    fn: str
    family: str
    resource: str  # shown name ("gfn lock", "read lock")
    key: str = "arg0"
    holds: str = "always"  # "always" | "rc != 0" | "rc == 0"
    returns: tuple = ()
    recursive: bool = False
    ignore_zero: bool = False  # release of key 0 (xfree(NULL)) is a no-op
    releases: str = ""  # an acquire that also releases (realloc: "arg0")
    shown: str = ""
    source: str = ""  # "gfn.toml"


@dataclass
class Model:
    rules: dict[str, list[Rule]] = field(default_factory=dict)  # fn -> rules
    families: list[str] = field(default_factory=list)

    def for_fn(self, name: str) -> list[Rule]:
        return self.rules.get(name, [])

    def returns(self, name: str) -> tuple | None:
        for r in self.for_fn(name):
            if r.returns:
                return r.returns
        return None


def load(directory: Path = RESOURCES) -> Model:
    return _load(str(directory))


@cache
def _load(directory: str) -> Model:
    model = Model()
    for path in sorted(Path(directory).glob("*.toml")):
        with open(path, "rb") as f:
            data = tomllib.load(f)
        family = data.get("family", path.stem)
        model.families.append(family)
        for kind in ("acquire", "release", "query"):
            for entry in data.get(kind, []):
                fns = entry["fn"] if isinstance(entry["fn"], list) else [entry["fn"]]
                for fn in fns:
                    rule = Rule(
                        kind=kind, fn=fn, family=family,
                        resource=entry.get("resource", family),
                        key=entry.get("key", "arg0"), holds=entry.get("holds", "always"),
                        returns=tuple(entry.get("returns", ())),
                        recursive=bool(entry.get("recursive", data.get("recursive", False))),
                        ignore_zero=bool(entry.get("ignore_zero", False)),
                        releases=entry.get("releases", ""), shown=entry.get("shown", ""),
                        source=path.name,
                    )
                    model.rules.setdefault(fn, []).append(rule)
    return model


def key_of(spec: str, args: tuple[int, ...], rv: int, symbols: dict[str, int]
           ) -> tuple | None:
    """The resource key a rule names, from a call's arguments and return value."""
    parts = []
    for part in spec.split(","):
        part = part.strip()
        page = part.endswith("&page")
        base = part[:-5] if page else part
        if base == "rv":
            v = rv
        elif base.startswith("arg"):
            i = int(base[3:])
            v = args[i] if i < len(args) else 0
        elif base.startswith("const:"):
            v = sum(base.encode()) or 1
        elif base.startswith("sym:"):
            v = symbols.get(base[4:], 0) or hash(base)
        else:
            return None
        parts.append(v & ~0xFFF if page else v)
    return tuple(parts)


def holds(rule: Rule, rv: int, args: tuple[int, ...] = ()) -> bool:
    rv_signed = rv - (1 << 64) if rv >= 1 << 63 else rv
    if rule.holds == "rc != 0":
        return rv != 0
    m = re.fullmatch(r"arg(\d) != 0", rule.holds)
    if m:
        i = int(m.group(1))
        return bool(args[i]) if i < len(args) else True
    if rule.holds == "rc == 0":
        return rv_signed == 0
    return True
