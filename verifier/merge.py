"""Reading report.json back, and merging per-ref reports into one.

A matrix run scaled out on CI (one job per ref, see :mod:`verifier.gitlab`) leaves one
``report.json`` per job. :func:`merge_reports` turns them into the :class:`Report` a
single multi-ref run would have returned, so every renderer (report.md, report.html,
junit.xml, the terminal) says the same as it would have: the reports are loaded back
into the model's dataclasses rather than rendered from JSON a second way.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from pathlib import Path
from typing import Any

from verifier.model import (
    FileChange,
    Patch,
    PatchMeta,
    PatchSeries,
    Report,
    RunResult,
    VerifyError,
    overall_verdict,
)

SCHEMAS = (2,)  # report.json schemas this module reads


def _convert(tp: Any, value: Any) -> Any:
    """A JSON value as the annotated type: dataclasses, enums, tuples, optionals."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for a in args:
            try:
                return _convert(a, value)
            except (TypeError, ValueError, KeyError):
                continue
        raise ValueError(f"{value!r} is none of {args}")
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in value)
        return tuple(_convert(a, v) for a, v in zip(args, value, strict=True))
    if origin in (list, typing.List):  # noqa: UP006
        (arg,) = typing.get_args(tp) or (Any,)
        return [_convert(arg, v) for v in value]
    if origin is dict:
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(kt, k): _convert(vt, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_jsonable(tp, value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is Any:
        return value
    if isinstance(tp, type) and not isinstance(value, tp) and not (tp is float
                                                                     and isinstance(value, int)):
        raise TypeError(f"{value!r} is not {tp.__name__}")
    return value


def from_jsonable(cls: type, data: dict[str, Any]) -> Any:
    """The inverse of :func:`verifier.model.to_jsonable` for one dataclass: keys that
    are fields are converted by their annotation; other keys (derived ones such as a
    check's ``change``) are ignored; missing fields take their defaults."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {f.name: _convert(hints[f.name], data[f.name])
              for f in dataclasses.fields(cls) if f.init and f.name in data}
    return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class LoadedPatch(Patch):
    """A patch read back from report.json: no diff text, its functions as recorded."""

    recorded_functions: tuple[str, ...] = ()

    @property
    def functions(self) -> tuple[str, ...]:
        return self.recorded_functions


def _patch(data: dict[str, Any]) -> Patch:
    meta = from_jsonable(PatchMeta, data)
    files = tuple(FileChange(old_path=f.get("old_path"), new_path=f.get("new_path"),
                             hunks=f.get("hunks", 0), added=f.get("added", 0),
                             removed=f.get("removed", 0)) for f in data.get("files", []))
    return LoadedPatch(meta=meta, diff="", files=files,
                       recorded_functions=tuple(data.get("functions", [])))


def load_report(path: Path) -> Report:
    """``report.json`` (a file, or a directory holding one) as a :class:`Report`."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VerifyError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise VerifyError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    except json.JSONDecodeError as e:
        raise VerifyError(f"{path}: not JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("tool", {}).get("name") != "xen-verify":
        raise VerifyError(f"{path}: not a xen-verify report.json")
    if data.get("schema") not in SCHEMAS:
        raise VerifyError(f"{path}: report.json schema {data.get('schema')!r}; this version "
                          f"reads {', '.join(map(str, SCHEMAS))}")
    try:
        series = PatchSeries(tuple(_patch(p) for p in data["patch"]["patches"]))
        runs = tuple(from_jsonable(RunResult, r) for r in data["runs"])
        return Report(series=series, runs=runs, command=data["tool"]["command"],
                      verdict=overall_verdict(runs))
    except (KeyError, TypeError, ValueError) as e:
        raise VerifyError(f"{path}: malformed report.json ({type(e).__name__}: {e})") from None


def merge_reports(reports: list[tuple[str, Report]], command: str) -> Report:
    """Runs of several reports of the same patch, in the order given, as one report.

    ``reports`` are (name, report) pairs; the name is used in error messages only.
    """
    if not reports:
        raise VerifyError("merge: no report given")
    from verifier.report import report_json

    first_name, first = reports[0]
    patch = report_json(first)["patch"]
    runs: list[RunResult] = []
    for name, rep in reports:
        if report_json(rep)["patch"] != patch:
            raise VerifyError(f"{name}: a report of another patch than {first_name} "
                              f"({rep.series.subject!r})")
        runs.extend(rep.runs)
    return Report(series=first.series, runs=tuple(runs), command=command,
                  verdict=overall_verdict(runs))


__all__ = ["LoadedPatch", "from_jsonable", "load_report", "merge_reports"]
