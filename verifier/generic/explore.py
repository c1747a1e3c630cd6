"""Explore the paths of one lifted function: a search over the stubs' return choices.

Every stub call with more than one alternative is a choice point. A path is the
sequence of choices taken; each runs in a fresh forked child of the harness (so
arenas and objects start over). Paths are tried fewest-deviations-first (every
alternative of every choice point early, then combinations), within a budget of
paths and seconds; a call site inside a loop offers its alternatives only on its
first visits (``SITE_CAP``), then the default.

Entry arguments come from the function's DWARF parameter types: a pointer to a
struct is a zeroed object of its size whose pointer members point to zeroed objects
of theirs (two levels; back-pointers to an enclosing object of the same type, list
heads empty). ``current`` is a zeroed vCPU of the argument's domain (or a domain of
its own), through a ``struct cpu_info`` at the top of the STACK_SIZE-aligned stack.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from verifier.generic import resources
from verifier.generic.dwarf import CType, Types
from verifier.generic.lift import TREE_PREFIX, Lifted
from verifier.generic.stubs import Stub

SITE_CAP = 2
MAX_PATHS = 256
MAX_SECONDS = 10.0
PATH_SECONDS = 2
MAX_HANGS = 2  # paths that hang before a side's exploration of a function stops
MAX_CALLS = 20000
MAX_OBJECTS = 1500
# Path outcomes that rest on the harness's own guesses, not on the tree: never judged
NOT_JUDGED = {"bug": "a BUG/ASSERT or panic", "null-state": "a NULL field of the zeroed state",
              "entry-object": "an overrun of an entry object the harness sized",
              "ub-state": "undefined behaviour (UBSan) on the harness's made-up values",
              "truncated": "the call budget"}
MAX_GLOBAL_VARIANTS = 6  # entry states with one global set, per function
ARG_OBJECT_MIN = 4096  # bytes of an entry argument's object (see entry_lines)
BUFFER_OBJECT = 16384  # bytes behind a pointer field to a non-struct (an MSR bitmap: 8 KiB)
ERRNO = {"EINVAL": 22, "ENOMEM": 12, "ENOENT": 2, "EFAULT": 14, "ERESTART": 85,
         "EBUSY": 16, "ESRCH": 3, "EPERM": 1, "EAGAIN": 11}
INT_ALTERNATIVES = (0, -22, -12)
# A fault below this address is a NULL pointer of the zeroed entry state (a field real
# Xen has set): the path is not judged, like a BUG/ASSERT the stubs' answers led to.
NULL_PAGE = 0x10000


class ExploreError(Exception):
    """The function could not be explored; the message says why."""


@dataclass
class Call:
    stub: str
    site: int  # return address in the harness
    n: int  # alternatives offered at this point (1: not a choice)
    k: int  # the one taken
    rv: int
    args: tuple[int, ...]
    hook: bool = False  # an overlay hook (inline fast path), not a stub
    up: tuple[int, ...] = ()  # return addresses above the caller (frame-pointer chain)


@dataclass
class PathResult:
    script: tuple[int, ...]
    calls: list[Call]
    outcome: str  # return | bug | crash | sanitizer | hang | truncated | null-state
    #               | entry-object (overran a harness-sized entry object: not judged)
    #               | ub-state (UBSan alone, on made-up values: not judged)
    rc: int | None = None
    last_pc: int = 0  # the last block of the function that ran (its epilogue, at -O0)
    last_pcs: tuple[int, ...] = ()  # the function's last blocks, newest first
    fault: int = 0  # rip of a crash / BUG
    stderr: str = ""
    privileged: list[str] = field(default_factory=list)
    variant: int = 0  # index in the catalogue

    @property
    def choices(self) -> list[Call]:
        return [c for c in self.calls if c.n > 1]


@dataclass
class Exploration:
    function: str
    paths: list[PathResult]
    complete: bool  # every path within the caps was explored
    seconds: float
    notes: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)  # entry state names, by path.variant


# --------------------------------------------------------------------------- choices


def type_alternatives(types: Types, stub: Stub) -> list[tuple]:
    """(kind, value) return alternatives from a callee's return type."""
    if stub.kind != "func":
        return []
    if not stub.typed:
        return [(0, 0)]
    if stub.ret is None:
        return [(0, 0)]
    t = types.get(stub.ret)
    if t.kind == "bool":
        return [(0, 1), (0, 0)]
    if t.kind == "ptr":
        size = max(types.sizeof(t.target), 64) if t.target is not None else 4096
        return [(1, min(size, 1 << 20)), (0, 0)]
    if t.kind == "int" and t.signed and t.size >= 4:
        return [(0, v) for v in INT_ALTERNATIVES]
    return [(0, 0)]


def _alt_spec(spec, types: Types, stub: Stub) -> tuple:
    """A resource-model return spec -> (kind, value, out_reg, out_size, out_value)."""
    if isinstance(spec, int):
        return (0, spec, -1, 0, 0)
    text = str(spec)
    out = (-1, 0, 0)
    if " out" in text:
        text, o = text.split(" out", 1)
        reg, what = o.split("=", 1)
        if reg.startswith("fill"):  # " outfill0=arg2": zero arg2 bytes at arg0
            ridx = int(reg[4:])
            out = (ridx, -2, int(what[3:]))
        elif what.startswith("object:"):
            ridx = int(reg)
            out = (ridx, -1, _object_size(types, what[7:]))
        else:
            ridx = int(reg)
            out = (ridx, 8, int(what, 0))
    text = text.strip()
    if text.startswith("object:arg"):
        return (3, int(text[10:]), *out)
    if text.startswith("object:"):
        return (1, _object_size(types, text[7:]), *out)
    if text == "page":
        return (2, 4096, *out)
    if text == "page_info":
        return (4, 0, *out)
    if text.startswith("arg"):
        return (5, int(text[3:]), *out)
    return (0, int(text, 0), *out)


def _object_size(types: Types, name: str) -> int:
    key = types.structs.get(name)
    return max(types.sizeof(key), 64) if key is not None else 4096


def _enum_out_params(types: Types, stub: Stub) -> list[tuple[int, CType]]:
    """Non-const pointer-to-enum parameters: the callee's answer, one choice each value."""
    out = []
    for i, p in enumerate(stub.params):
        t = types.get(p)
        if t.kind == "ptr" and not t.const and t.target is not None:
            e = types.get(t.target)
            if e.kind == "enum" and e.enumerators and i < len(stub.regs) \
                    and stub.regs[i] is not None:
                out.append((stub.regs[i], e))
    return out[:1]


def stub_alternatives(types: Types, model: resources.Model, stub: Stub
                      ) -> list[tuple[int, int, int, int, int]]:
    """Every alternative (kind, value, out_reg, out_size, out_value) for one stub."""
    if stub.kind != "func":
        return []
    spec = model.returns(stub.label)
    if spec is not None:
        base = [_alt_spec(s, types, stub) for s in spec]
    else:
        base = [(k, v, -1, 0, 0) for k, v in type_alternatives(types, stub)]
    outs = _enum_out_params(types, stub)
    if outs and all(b[2] < 0 for b in base):
        reg, enum = outs[0]
        size = enum.size or 4
        vals = [v for _, v in enum.enumerators][:24]
        base = [(b[0], b[1], reg, size, v) for b in base for v in vals]
    return base[:40]


# --------------------------------------------------------------------------- arguments


class _Graph:
    """Objects and pointer writes for the entry arguments, in protocol lines."""

    def __init__(self, types: Types, populated: bool = False, view: str = "") -> None:
        self.types = types
        self.populated = populated  # a live object: buffers behind pointers, unions filled
        self.view = view  # the union member filled first (vcpu.arch's "hvm" or "pv")
        self.lines: list[str] = []
        self.n = 0
        self.by_type: dict[int, int] = {}
        self.all_of: dict[int, list[int]] = {}  # struct type -> every object of it
        self.slots: list[tuple[int, int | None]] = []  # (page, struct) for finish()
        self.taken: set[tuple[int, int]] = set()  # (object, offset) holding a pointer

    def obj(self, size: int, align: int = 64, stack_top: bool = False) -> int:
        self.lines.append(f"obj {max(size, 8)} {align} {int(stack_top)}")
        self.n += 1
        return self.n - 1

    def ptr(self, obj: int, off: int, target: int, toff: int = 0) -> None:
        self.lines.append(f"w 1 {obj} {off} 8 {toff} {target}")
        self.taken.add((obj, off))

    def val(self, obj: int, off: int, size: int, value: int) -> None:
        self.lines.append(f"w 0 {obj} {off} {size} {value} 0")

    def struct(self, key: int, depth: int, ancestors: dict[int, int], least: int = 64) -> int:
        t = self.types.get(key)
        idx = self.obj(max(t.size, least))
        self.all_of.setdefault(key, []).append(idx)
        anc = {**ancestors, key: idx}
        self.fill(idx, 0, key, depth, anc)
        return idx

    def fill(self, idx: int, base: int, key: int, depth: int, anc: dict[int, int]) -> None:
        t = self.types.get(key)
        if t.kind not in ("struct", "union"):
            return
        if t.name == "list_head":
            if (idx, base) not in self.taken and (idx, base + 8) not in self.taken:
                self.ptr(idx, base, idx, base)  # empty list: next = prev = itself
                self.ptr(idx, base + 8, idx, base)
            return
        members = t.members
        if t.kind == "union" and self.view:  # the state's view first: its pointers win
            members = sorted(members, key=lambda m: m[0] != self.view)
        for _name, off, mkey in members:
            if self.n >= MAX_OBJECTS:
                return
            m = self.types.get(mkey)
            if m.kind == "struct" or (m.kind == "union" and self.populated):
                # a union's members overlap: each view is filled where an earlier one
                # left no pointer (vcpu.arch's {pv, hvm}: both views usable)
                self.fill(idx, base + off, mkey, depth, anc)
            elif m.kind == "ptr" and depth > 0 and (idx, base + off) not in self.taken:
                tgt = self.types.get(m.target)  # void * (no target): a buffer too
                if tgt.kind == "func":
                    continue  # a hook: a call through NULL returns 0 (the runtime)
                if tgt.kind != "struct" or tgt.size == 0:
                    if self.populated:
                        self._buffer(idx, base + off, tgt)
                    continue
                if m.target in anc:
                    self.ptr(idx, base + off, anc[m.target])
                elif m.target in self.by_type and depth <= 1:
                    self.ptr(idx, base + off, self.by_type[m.target])
                else:
                    sub = self.struct(m.target, depth - 1, anc)
                    self.by_type.setdefault(m.target, sub)
                    self.ptr(idx, base + off, sub)

    def _buffer(self, idx: int, off: int, tgt: CType) -> None:
        """A pointer field to anything but a struct: zeroed pages of its own (a bitmap,
        a buffer, an array); to an array of struct pointers (``d->vcpu``): a page whose
        first slot points at the graph's object of that struct."""
        if self.n >= MAX_OBJECTS:
            return
        page = self.obj(BUFFER_OBJECT)
        self.ptr(idx, off, page)
        inner = self.types.get(tgt.target) if tgt.kind == "ptr" else None
        if inner is not None and inner.kind == "struct":
            self.slots.append((page, tgt.target))  # filled once every object exists

    def finish(self) -> None:
        for page, key in self.slots:
            if key in self.by_type:
                self.ptr(page, 0, self.by_type[key])


def variants() -> list[dict]:
    """The catalogue of entry states (``resources/catalogue.toml``)."""
    from verifier.generic.resources import tomllib

    with open(resources.RESOURCES / "catalogue.toml", "rb") as f:
        return tomllib.load(f).get("variant", []) or [{"name": "zeroed"}]


def function_variants(lifted: Lifted | list[Lifted], function: str) -> list[dict]:
    """The catalogue's entry states, then one per global the function reads: the zeroed
    state with that global set (zero-filled data takes one side of every branch on it).
    Given base and patched (in that order), the globals either side reads: both sides
    run the same states, whatever the patch adds or drops."""
    return variants() + global_variants(lifted, function)


def global_variants(lifted: Lifted | list[Lifted], function: str) -> list[dict]:
    sides = lifted if isinstance(lifted, list) else [lifted]
    reads: list[tuple[str, Lifted]] = []
    for one in sides:
        reads += [(n, one) for n in global_reads(one, function)
                  if n not in {r for r, _ in reads}]
    out = []
    for name, one in reads:
        t = one.types.get(one.types.variable_types.get(name))
        if t.kind in ("int", "enum", "bool") and 0 < t.size <= 8:
            size, what = t.size, f"{name} = 1"
        elif _is_bitmap(one.types, t):  # cpumask_t, nodemask_t, an unsigned long[]
            size, what = 8, f"{name}: bit 0 set"
        else:
            continue
        out.append({"name": f"zeroed, with the global {what}",
                    "values": {name: (size, 1)}})
        if len(out) >= MAX_GLOBAL_VARIANTS:
            break
    return out


def _is_bitmap(types: Types, t: CType) -> bool:
    if t.kind == "struct" and len(t.members) == 1:
        t = types.get(t.members[0][2])
    return t.kind == "array" and types.get(t.target).kind == "int" and \
        types.sizeof(t.target) == 8


_READS_CACHE: dict[tuple[str, str], list[str]] = {}
_WRITABLE_CACHE: dict[str, frozenset[str]] = {}


def _writable_data(exe: Path) -> frozenset[str]:
    """The executable's data symbols in writable sections (nm: b/B/d/D, small g/G/s/S)."""
    if str(exe) not in _WRITABLE_CACHE:
        try:
            out = subprocess.run(["nm", "--defined-only", str(exe)], capture_output=True,
                                 text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            out = ""
        _WRITABLE_CACHE[str(exe)] = frozenset(
            p[2] for p in (ln.split() for ln in out.splitlines())
            if len(p) == 3 and p[1] in "bBdDgGsS")
    return _WRITABLE_CACHE[str(exe)]


def global_reads(lifted: Lifted, function: str) -> list[str]:
    """File-scope data the function's own code (inlined callees included) reads or takes
    the address of: its disassembly's rip-relative operands, in order of first use."""
    key = (str(lifted.exe), function)
    if key in _READS_CACHE:
        return _READS_CACHE[key]
    sym = lifted.entries.get(function, function)
    lo = lifted.symbols.get(sym, 0)
    hi = lifted.symbols.get(f"{sym}:end", 0)
    names: list[str] = []
    if lo and hi > lo:
        try:
            text = subprocess.run(
                ["objdump", "-d", "--no-show-raw-insn", f"--start-address={lo:#x}",
                 f"--stop-address={hi:#x}", str(lifted.exe)],
                capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        writable = _writable_data(lifted.exe)  # a const table lives in .rodata
        for m in re.finditer(r"#\s+[0-9a-f]+\s+<([\w.$]+?)(?:\+0x[0-9a-f]+)?>", text):
            name = m.group(1)
            if (name in lifted.types.variable_types and name in writable
                    and not name.startswith("xv_") and name not in names):
                names.append(name)
    _READS_CACHE[key] = names
    return names


def _field(types: Types, key: int, path: str) -> tuple[int, CType] | None:
    """(offset, type) of a dotted member path in a struct, or None."""
    off = 0
    for part in path.split("."):
        t = types.get(key)
        hit = next(((o, k) for n, o, k in t.members if n == part), None)
        if hit is None:
            return None
        off += hit[0]
        key = hit[1]
    return off, types.get(key)


def _apply_variant(g: _Graph, types: Types, variant: dict, symbols: dict[str, int]) -> None:
    for sym, (size, value) in (variant.get("values") or {}).items():
        addr = symbols.get(sym)
        if addr:  # a value into a global, written in each path's process
            g.lines.append(f"w 3 0 {addr} {size} {value} 0")
    for sym, sname in (variant.get("globals") or {}).items():
        key = types.structs.get(sname)
        addr = symbols.get(sym)
        if key is None or not addr or not g.all_of.get(key):
            continue
        g.lines.append(f"w 2 0 {addr} 8 0 {g.all_of[key][0]}")
    for sname, fields in (variant.get("fields") or {}).items():
        key = types.structs.get(sname)
        if key is None:
            continue
        objs = g.all_of.get(key, [])
        for path, value in fields.items():
            hit = _field(types, key, path)
            if hit is None:
                continue
            off, ft = hit
            if isinstance(value, str):
                value = dict(ft.enumerators).get(value)
                if value is None:
                    continue
            if ft.kind not in ("int", "enum", "bool") or not ft.size:
                continue
            for idx in objs:
                g.val(idx, off, ft.size, int(value))


def entry_lines(types: Types, function: str, symbols: dict[str, int], variant: dict | None = None
                ) -> tuple[list[str], str]:
    """Protocol lines building the arguments and the CPU; and a one-line description."""
    fn = types.functions.get(function)
    if fn is None:
        raise ExploreError(f"no DWARF for {function}")
    g = _Graph(types, populated=bool(variant and variant.get("populated")),
               view=str((variant or {}).get("view", "")))
    desc = []
    domain_key = types.structs.get("struct domain")
    vcpu_key = types.structs.get("struct vcpu")
    domain_obj = None
    args: list[str] = []
    reg = 0
    for name, key in fn.params:
        t = types.get(key)
        if t.kind in ("struct", "union") and t.size > 16:
            raise ExploreError(f"parameter {name} is a struct passed by value")
        if t.kind == "float":
            raise ExploreError(f"parameter {name} is floating point")
        if reg >= 6:
            raise ExploreError("more than six argument registers")
        if t.kind == "ptr" and t.target is not None and types.get(t.target).kind == "struct":
            tgt = types.get(t.target)
            # each argument its own object, at least a page: a pointer argument is often
            # an array (page-table entries, page_info runs of 1 << order)
            idx = g.struct(t.target, 2, {}, least=ARG_OBJECT_MIN)
            g.by_type.setdefault(t.target, idx)
            if t.target == domain_key and domain_obj is None:
                domain_obj = idx
            args.append(f"arg {reg} obj {idx}")
            desc.append(f"{name}: zeroed struct {tgt.name}")
        elif t.kind == "ptr":
            size = max(types.sizeof(t.target), ARG_OBJECT_MIN) if t.target is not None \
                else ARG_OBJECT_MIN
            idx = g.obj(min(size, 1 << 20))
            args.append(f"arg {reg} obj {idx}")
            desc.append(f"{name}: zeroed buffer")
        else:
            args.append(f"arg {reg} val 0")
            desc.append(f"{name}: 0")
        reg += 2 if t.kind in ("struct", "union") and t.size > 8 else 1
    cpu_key = types.structs.get("struct cpu_info")
    if cpu_key is not None and vcpu_key is not None:
        cpu = types.get(cpu_key)
        vcpu = g.by_type.get(vcpu_key)
        if vcpu is None:
            vcpu = g.struct(vcpu_key, 1, {})
        if domain_key is not None:
            vt = types.get(vcpu_key)
            dom_off = next((o for n, o, _ in vt.members if n == "domain"), None)
            if dom_off is not None:
                if domain_obj is None:
                    domain_obj = g.by_type.get(domain_key) or g.struct(domain_key, 1, {})
                g.ptr(vcpu, dom_off, domain_obj)
        idx = g.obj(cpu.size, 64, stack_top=True)  # exact: get_cpu_info() is top - size
        cur = next((o for n, o, _ in cpu.members if n == "current_vcpu"), None)
        if cur is not None:
            g.ptr(idx, cur, vcpu)
        desc.append("current: a zeroed vCPU of that domain")
    g.finish()
    if variant:
        _apply_variant(g, types, variant, symbols)
        desc.append(variant.get("name", ""))
    return ["clear", *g.lines, *args, f"fn {function}"], "; ".join(desc)


# --------------------------------------------------------------------------- running


def _u64(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s, 0)


def parse(script: tuple[int, ...], reply: dict, names: list[str], ret_sizes: list[int]
          ) -> PathResult:
    calls: list[Call] = []
    outcome, rc, last_pc, fault, priv = "crash", None, 0, 0, []
    last_pcs: tuple[int, ...] = ()
    entry_overrun = False
    for ln in reply.get("events", "").splitlines():
        p = ln.split()
        if not p:
            continue
        if p[0] == "C" and len(p) >= 14:
            sid = int(p[1])
            rv = _u64(p[5])
            size = ret_sizes[sid] if sid < len(ret_sizes) else 8
            if 0 < size < 8:
                rv &= (1 << (8 * size)) - 1
            calls.append(Call(names[sid], _u64(p[2]), int(p[3]), int(p[4]), rv,
                              tuple(_u64(x) for x in p[6:14]),
                              up=tuple(_u64(x) for x in p[14:17] if x != "0")))
        elif p[0] == "K" and len(p) >= 5:
            calls.append(Call(p[1], _u64(p[2]), 1, 0, _u64(p[4]), (_u64(p[3]),), hook=True))
        elif p[0] == "R":
            outcome, rc = "return", _u64(p[1])
            if len(p) > 2:
                last_pcs = tuple(_u64(x) for x in p[2:6])
                last_pc = last_pcs[0]
        elif p[0] == "U":
            outcome = "bug"
        elif p[0] == "N":  # a noreturn callee (panic): "U" follows, unwound like a BUG
            continue
        elif p[0] == "B":
            fault = _u64(p[1])
        elif p[0] == "S":
            outcome, fault = "crash", _u64(p[1])
            if len(p) > 2 and _u64(p[2]) < NULL_PAGE:
                outcome = "null-state"
        elif p[0] == "H":
            outcome = "hang"
        elif p[0] == "T":
            outcome = "truncated"
        elif p[0] == "P":
            priv.append(p[1])
        elif p[0] == "E":
            entry_overrun = True
    err = reply.get("stderr", "")
    ex = reply.get("exit", 0)
    err = "\n".join(ln for ln in err.splitlines() if "swapcontext" not in ln)
    ub = [ln for ln in err.splitlines() if "runtime error" in ln]
    real = [ln for ln in ub if "null pointer" not in ln]
    oob = any("out of bounds" in ln for ln in real)
    value_ub_only = bool(ub) and not oob and "AddressSanitizer" not in err
    if outcome == "return" and value_ub_only:
        pass  # UBSan went on (halt_on_error=0): the path returned and is judged
    elif outcome != "null-state" and (ub or "AddressSanitizer" in err or ex in (86, 87)):
        m = re.search(r"SEGV on unknown address (0x[0-9a-f]+)", err)
        null_segv = bool(m) and int(m.group(1), 16) < NULL_PAGE
        null_ub = bool(ub) and not real and "AddressSanitizer" not in err
        outcome = "null-state" if (null_segv or null_ub) and not real else "sanitizer"
        if outcome == "sanitizer" and real and value_ub_only:
            # UBSan alone: a shift by a zeroed count, an overflow of made-up values; what
            # the harness's values cause, not the tree (memory errors are judged: ASan's,
            # and UBSan's out-of-bounds indexing)
            outcome = "ub-state"
        if outcome == "sanitizer" and not real and (entry_overrun
                                                     or _overran_entry_object(err)):
            outcome = "entry-object"
    return PathResult(script=script, calls=calls, outcome=outcome, rc=rc, last_pc=last_pc,
                      last_pcs=last_pcs, fault=fault, stderr=err[:4000], privileged=priv)


def _overran_entry_object(err: str) -> bool:
    """An ASan overflow past an object the harness built for the entry state: its size
    is the harness's guess (a pointer argument may be an array), so not judged."""
    m = re.search(r"(?:heap-buffer-overflow|container-overflow)[\s\S]*?\n"
                  r"allocated by thread \w+ here:\n((?:[ \t]+#\d+ [^\n]*\n?)+)", err)
    return bool(m) and "build_state" in m.group(1)


class Driver:
    """A started harness process for one lifted unit (stubs configured)."""

    def __init__(self, lifted: Lifted, model: resources.Model, timeout: float = 30.0) -> None:
        from verifier.run import HarnessProcess

        self.lifted = lifted
        self.model = model
        # UBSan reports and goes on: a shift by a zeroed count is the harness's values,
        # and the path past it is still judged (parse keeps such a path's return)
        self.proc = HarnessProcess(lifted.exe, timeout=timeout, forks=True, env={
            "UBSAN_OPTIONS": "halt_on_error=0:print_stacktrace=1:exitcode=87"})
        self.names = [s.label for s in lifted.stubs]
        self.ret_sizes = [s.ret_size for s in lifted.stubs]
        self.alternatives: dict[str, list] = {}
        self.proc.call("hello", record=False)
        self.proc.call(f"limits {SITE_CAP} {MAX_CALLS} {PATH_SECONDS}", record=False)
        if lifted.warn_rips:
            for i in range(0, len(lifted.warn_rips), 200):
                chunk = " ".join(hex(r) for r in lifted.warn_rips[i:i + 200])
                self.proc.call(f"warn {chunk}", record=False)
        for i, s in enumerate(lifted.stubs):
            alts = stub_alternatives(lifted.types, model, s)
            self.alternatives[s.label] = alts
            if alts:
                spec = " ".join(" ".join(str(x) for x in a) for a in alts)
                self.proc.call(f"stub {i} {spec}", record=False)
        self.setup: list[str] = []
        self.setups: dict[str, list[str]] = {}  # per catalogue variant name

    def close(self) -> None:
        self.proc.close()

    def prepare(self, function: str, variant: dict | None = None) -> str:
        dwarf_name = self.lifted.entries.get(function, function)
        dwarf_name = dwarf_name.removeprefix("xv_real_").removeprefix("xv_unit_")
        lines, desc = entry_lines(self.lifted.types, dwarf_name, self.lifted.symbols, variant)
        lines[-1] = f"fn {function}"
        sym = self.lifted.entries.get(function, function)
        lo = self.lifted.symbols.get(sym, 0)
        hi = self.lifted.symbols.get(f"{sym}:end", lo + (1 << 20))
        lines.append(f"range {lo:#x} {hi:#x}")
        self.setup = lines
        self.setups[variant.get("name", "") if variant else ""] = lines
        for ln in lines:
            self.proc.call(ln, record=False)
        return desc

    def run(self, script: tuple[int, ...]) -> PathResult:
        arg = ",".join(str(c) for c in script) or "-"
        reply = self.proc.call(f"run {arg}", record=False)
        return parse(script, reply, self.names, self.ret_sizes)


def explore(driver: Driver, function: str, *, max_paths: int = MAX_PATHS,
            max_seconds: float = MAX_SECONDS, states: list[dict] | None = None
            ) -> Exploration:
    """Run ``function``'s paths through ``driver`` in every entry state (``states``, or
    function_variants of the driver's unit; fewest deviations first within each),
    sharing the budget."""
    import heapq

    t0 = time.monotonic()
    paths: list[PathResult] = []
    complete = True
    cat = states if states is not None else function_variants(driver.lifted, function)
    hangs = 0
    for vi, variant in enumerate(cat):
        if hangs >= MAX_HANGS:
            complete = False  # the hangs are the finding; each more costs PATH_SECONDS
            break
        driver.prepare(function, variant)
        share_paths = (max_paths - len(paths)) // (len(cat) - vi)
        share_secs = (max_seconds - (time.monotonic() - t0)) / (len(cat) - vi)
        t1 = time.monotonic()
        seen: set[tuple[int, ...]] = set()
        frontier: list[tuple[int, int, tuple[int, ...]]] = [(0, 0, ())]
        mine = 0
        while frontier:
            if mine >= share_paths or time.monotonic() - t1 > share_secs or \
                    hangs >= MAX_HANGS:
                complete = False
                break
            _, _, script = heapq.heappop(frontier)
            if script in seen:
                continue
            seen.add(script)
            res = driver.run(script)
            res.variant = vi
            paths.append(res)
            mine += 1
            hangs += res.outcome == "hang"
            taken = [c.k for c in res.choices]
            for i in range(len(script), len(res.choices)):
                c = res.choices[i]
                for j in range(c.n):
                    if j == c.k:
                        continue
                    new = (*taken[:i], j)
                    if new not in seen:
                        heapq.heappush(frontier, (sum(1 for x in new if x), len(new), new))
    return Exploration(function=function, paths=paths, complete=complete,
                       seconds=time.monotonic() - t0,
                       states=[v.get("name", "") for v in cat])


def run_scripts(driver: Driver, function: str, states: list[dict],
                wanted: list[tuple[int, tuple[int, ...]]]) -> Exploration:
    """The paths ``wanted`` ((state index, choice script) each) and no others: another
    side's violating paths, replayed on this side to compare like with like."""
    paths: list[PathResult] = []
    for vi in sorted({v for v, _ in wanted}):
        if vi >= len(states):
            continue
        driver.prepare(function, states[vi])
        for v, script in wanted:
            if v == vi:
                res = driver.run(script)
                res.variant = vi
                paths.append(res)
    return Exploration(function=function, paths=paths, complete=True, seconds=0.0,
                       states=[v.get("name", "") for v in states])


# --------------------------------------------------------------------------- locations


class Symbolizer:
    """Harness addresses -> tree ``file:line`` (addr2line, cached)."""

    def __init__(self, exe: Path, root: Path, cwd: Path, unit: str = "") -> None:
        self.exe, self.root, self.cwd, self.unit = exe, Path(root), Path(cwd), unit
        self.cache: dict[int, str] = {}

    def lookup(self, addrs: list[int], call_site: bool = True) -> None:
        """Symbolize ``addrs``; through inlined frames, the innermost line in a .c file
        (a call inside a header's static inline is shown where the unit calls it)."""
        todo = sorted({a for a in addrs if a and a not in self.cache})
        if not todo:
            return
        q = [hex(a - 1 if call_site else a) for a in todo]
        try:
            out = subprocess.run(["addr2line", "-a", "-i", "-e", str(self.exe), *q],
                                 capture_output=True, text=True, timeout=60).stdout.splitlines()
        except (OSError, subprocess.TimeoutExpired):
            out = []
        frames: dict[int, list[str]] = {}
        cur = None
        for ln in out:
            ln = ln.strip()
            if ln.startswith("0x"):
                cur = int(ln, 16)
                frames[cur] = []
            elif cur is not None:
                frames[cur].append(ln)
        for a, qa in zip(todo, q, strict=True):
            locs = [self._tree_path(x) for x in frames.get(int(qa, 16), [])] or ["?"]
            self.cache[a] = next((x for x in locs if x.split(":")[0].endswith(".c")), locs[0])

    def _tree_path(self, loc: str) -> str:
        m = re.match(r"(.*):(\d+)", loc)
        if not m or m.group(1) == "??":
            return "?"
        if m.group(1).startswith(TREE_PREFIX + "/"):  # the lifted unit's own name for root
            rel = Path(m.group(1)[len(TREE_PREFIX) + 1:])
            return f"{Path(*_normalise(Path('/') / rel)[1:]).as_posix()}:{m.group(2)}"
        path = Path(m.group(1))
        if not path.is_absolute():
            path = self.cwd / path
        try:
            rel = Path(*_normalise(path)).relative_to(self.root.resolve())
        except ValueError:
            # a bare file name (DWARF 5's primary file): the unit, when it is its name
            rel = Path(self.unit) if self.unit and Path(self.unit).name == path.name \
                else Path(path.name)
        return f"{rel.as_posix()}:{m.group(2)}"

    def at(self, addr: int) -> str:
        return self.cache.get(addr, "?")

    def site(self, call: Call) -> str:
        """Where the unit made the call: the first frame, up the chain, in a .c file."""
        for a in (call.site, *call.up):
            loc = self.cache.get(a, "?")
            if loc.split(":")[0].endswith(".c"):
                return loc
        return self.cache.get(call.site, "?")


def _normalise(path: Path) -> tuple[str, ...]:
    parts: list[str] = []
    for p in path.resolve().parts if path.exists() else path.parts:
        if p == "..":
            if parts:
                parts.pop()
        elif p != ".":
            parts.append(p)
    return tuple(parts)
