"""P9: what each caller of fill_ro_mpt does with its new return value.

fill_ro_mpt changed from ``void`` to a boolean that says whether it filled an empty
RO_MPT slot. Which value means "filled" is measured by running the tree's own
fill_ro_mpt in the harness (an empty slot, then the same slot again); each caller is
then read with tree-sitter-c: the polarity of the result where it is used (``!`` flips
it), and what the caller does on it:

- ignores it: fine, it needs only the fill;
- stops a loop or returns early on it: right only when it stops on "not filled" (the
  walk came round to an L4 whose slot was already set: P7's assumption);
- takes an error path on it (returns a negative errno, ``goto`` an error label, BUG,
  crashes the domain): wrong either way, since filling an empty slot is the normal case
  and an L4 validated with m2p_strict set has the slot from the start;
- passes it on (``return fill_ro_mpt(...)``): fine here, its own callers not followed;
- anything else: P9 cannot judge it (the check says ``error`` with the caller named).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILL = "fill_ro_mpt"
_CALL = re.compile(r"\bfill_ro_mpt\s*\(")
_ERROR_GOTO = re.compile(r"^(?:err|fail|bad|out_err|error|unlock_err)", re.I)
_ERROR_CALLS = ("BUG", "BUG_ON", "domain_crash", "ASSERT_UNREACHABLE", "panic")
_CONTINUE_ERRNOS = ("ERESTART", "EINTR", "EAGAIN")


@dataclass(frozen=True)
class Caller:
    file: str
    line: int
    function: str
    text: str
    use: str  # "ignored" | "stops" | "error path" | "passes on" | "other"
    when: bool | None  # the result's value (as returned) on which the caller acts
    judgement: str
    verdict: str  # "ok" | "wrong" | "unknown"


@dataclass(frozen=True)
class Declaration:
    file: str
    line: int
    return_type: str
    kind: str  # "definition" | "declaration"


def _parser() -> Any:
    import tree_sitter
    import tree_sitter_c

    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))


def _text(node: Any) -> str:
    return node.text.decode(errors="replace") if node is not None and node.text else ""


def _function_name(node: Any) -> str | None:
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        d = d.child_by_field_name("declarator")
    name = d.child_by_field_name("declarator") if d is not None else None
    return _text(name) or None


def _return_type(fn: Any) -> str:
    """The declared type before the name: ``bool``, ``bool_t``, ``void``, ..."""
    t = fn.child_by_field_name("type")
    return _text(t) or "?"


def _walk(node: Any):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children))


def _enclosing(node: Any, kinds: tuple[str, ...]) -> Any:
    n = node.parent
    while n is not None and n.type not in kinds:
        n = n.parent
    return n


def _value_context(call: Any) -> tuple[Any, bool, bool]:
    """Climb over parentheses, ``!`` and casts: (the node using the value, polarity,
    cast to void)."""
    node, polarity = call, True
    while node.parent is not None:
        p = node.parent
        if p.type == "parenthesized_expression":
            node = p
        elif p.type == "unary_expression" and _text(p.child_by_field_name("operator")) == "!":
            polarity, node = not polarity, p
        elif p.type == "cast_expression":
            if _text(p.child_by_field_name("type")).strip() == "void":
                return p, polarity, True
            node = p
        else:
            break
    return node, polarity, False


def _action(stmt: Any) -> str:
    """What a branch does: "error", "stops", "continues later" or "other"."""
    if stmt is None:
        return "other"
    if stmt.type == "compound_statement":
        body = [c for c in stmt.named_children if c.type != "comment"]
        kinds = [_action(c) for c in body]
        for k in ("error", "continues later", "stops"):
            if k in kinds:
                return k
        return "other"
    if stmt.type == "break_statement" or stmt.type == "continue_statement":
        return "stops"
    if stmt.type == "goto_statement":
        label = _text(stmt.child_by_field_name("label"))
        return "error" if _ERROR_GOTO.match(label) else "stops"
    if stmt.type == "return_statement":
        value = " ".join(_text(c) for c in stmt.named_children).strip()
        if not value or value in ("0", "true", "false", "1"):
            return "stops"
        m = re.fullmatch(r"-\s*(E[A-Z0-9_]+)|(-\d+)", value)
        if m:
            return "continues later" if m.group(1) in _CONTINUE_ERRNOS else "error"
        return "other"
    if stmt.type == "expression_statement":
        text = _text(stmt)
        if any(re.match(rf"\s*{c}\s*\(", text) for c in _ERROR_CALLS):
            return "error"
    return "other"


def _condition_polarity(cond: Any, var: str) -> bool | None:
    """Whether ``cond`` is true when ``var`` is true (True), when it is false (False), or
    cannot be told (None). ``var || x`` and ``var && x`` both count as true-on-true."""
    hits = []
    for n in _walk(cond):
        if n.type == "identifier" and _text(n) == var:
            pol = True
            p = n.parent
            while p is not None and p is not cond.parent:
                if p.type == "unary_expression" and _text(p.child_by_field_name("operator")) == "!":
                    pol = not pol
                if p.type == "binary_expression" and _text(
                        p.child_by_field_name("operator")) not in ("||", "&&"):
                    return None  # compared or computed with: not a plain truth value
                p = p.parent
            hits.append(pol)
    return hits[0] if len(set(hits)) == 1 else None


def _judge(use: str, acts_on_filled: bool | None) -> tuple[str, str]:
    if use == "ignored":
        return "ok", "fine: needs only the fill"
    if use == "passes on":
        return "ok", "passes the result on (its own callers are not followed)"
    if use == "stops":
        if acts_on_filled is False:
            return "ok", ("stops on an L4 whose slot was already set (the walk came round: "
                          "P7's assumption)")
        return "wrong", "stops on the first L4 it fills: the L4s after it keep an empty slot"
    if use == "error path":
        if acts_on_filled:
            return "wrong", "takes an error path when it fills an empty slot, the normal case"
        return "wrong", ("takes an error path on an L4 whose slot is already set: L4s "
                         "validated with m2p_strict set have it from the start")
    return "unknown", "uses the result in a way P9 cannot judge: review it"


def _classify(call: Any, fn: Any, filled: bool) -> tuple[str, bool | None]:
    """(use, the value of the *condition* "slot was filled" on which the caller acts)."""
    node, polarity, void = _value_context(call)
    if void:
        return "ignored", None
    ctx = node.parent
    if ctx is None:
        return "other", None
    if ctx.type == "expression_statement":
        return "ignored", None
    if ctx.type == "return_statement":
        return "passes on", None
    # the value lands in a variable: follow the conditions that read it
    var = None
    if ctx.type == "assignment_expression" and ctx.child_by_field_name("right") == node:
        var = _text(ctx.child_by_field_name("left"))
    elif ctx.type == "init_declarator" and ctx.child_by_field_name("value") == node:
        var = _text(ctx.child_by_field_name("declarator")).lstrip("*")
    if var is not None:
        if not re.fullmatch(r"\w+", var):
            return "other", None
        acts = []
        for n in _walk(fn):
            if n.type not in ("if_statement", "while_statement") or n.start_byte < ctx.end_byte:
                continue
            cond = n.child_by_field_name("condition")
            pol = _condition_polarity(cond, var) if cond is not None else None
            if cond is None or not any(
                    x.type == "identifier" and _text(x) == var for x in _walk(cond)):
                continue
            if pol is None:
                return "other", None
            action = _action(n.child_by_field_name("consequence"))
            if action in ("stops", "error"):
                # var true <=> result == filled (XOR the assignment's '!')
                acts.append((action, pol == polarity))
        uses = {a for a, _ in acts}
        if not acts:
            return "other", None
        if "error" in uses:
            return "error path", next(v for a, v in acts if a == "error")
        return "stops", acts[0][1]
    # used straight in a condition
    cond_of = ctx
    if ctx.type == "binary_expression" and _text(ctx.child_by_field_name("operator")) in (
            "||", "&&"):
        cond_of = ctx.parent
        while cond_of is not None and cond_of.type in ("binary_expression",
                                                       "parenthesized_expression"):
            cond_of = cond_of.parent
    if cond_of is not None and cond_of.type in ("if_statement", "while_statement"):
        action = _action(cond_of.child_by_field_name("consequence"))
        if action == "error":
            return "error path", polarity
        if action == "stops":
            return "stops", polarity
    return "other", None


def find(tree_dir: Path) -> tuple[list[Declaration], list[Caller]]:
    """Definitions/declarations of fill_ro_mpt and every call site in the tree's C."""
    parser = _parser()
    decls: list[Declaration] = []
    calls: list[tuple[str, Any, Any, str]] = []  # (file, call node, function node, text)
    root = tree_dir / "xen"
    if not root.is_dir():
        root = tree_dir
    for dirpath, dirnames, files in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(files):
            if not name.endswith((".c", ".h")):
                continue
            path = Path(dirpath) / name
            if not path.is_file() or path.is_symlink():
                continue  # what a patch creates as a link is not followed
            try:
                text = path.read_bytes()
            except OSError:
                continue
            if FILL.encode() not in text:
                continue
            rel = str(path.relative_to(tree_dir))
            tree = parser.parse(text)
            for n in _walk(tree.root_node):
                if n.type == "function_definition" and _function_name(n) == FILL:
                    decls.append(Declaration(rel, n.start_point[0] + 1, _return_type(n),
                                             "definition"))
                elif n.type == "declaration" and any(
                        d.type == "function_declarator" and _text(
                            d.child_by_field_name("declarator")) == FILL
                        for d in _walk(n)):
                    decls.append(Declaration(rel, n.start_point[0] + 1, _return_type(n),
                                             "declaration"))
                elif n.type == "call_expression" and _text(
                        n.child_by_field_name("function")) == FILL:
                    fn = _enclosing(n, ("function_definition",))
                    if fn is not None:
                        line = text.split(b"\n")[n.start_point[0]].decode(errors="replace")
                        calls.append((rel, n, fn, line.strip()))
    callers = []
    for rel, call, fn, line in calls:
        callers.append(_caller(rel, call, fn, line))
    return decls, callers


def _caller(rel: str, call: Any, fn: Any, line: str) -> Caller:
    use, when = _classify(call, fn, True)
    verdict, judgement = _judge(use, when)
    return Caller(rel, call.start_point[0] + 1, _function_name(fn) or "?", line, use, when,
                  judgement, verdict)


def rejudge(c: Caller, filled_value_is_true: bool) -> Caller:
    """The caller judged against the measured contract: if the tree's fill_ro_mpt returns
    false on filling, every polarity the caller relies on is the other way round."""
    if filled_value_is_true or c.when is None:
        return c
    verdict, judgement = _judge(c.use, not c.when)
    return Caller(c.file, c.line, c.function, c.text, c.use, not c.when, judgement, verdict)


__all__ = ["Caller", "Declaration", "find", "rejudge"]
