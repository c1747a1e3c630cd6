"""Types of a lifted unit, read from its DWARF (pyelftools).

Only what the stubs and the driver need: each function's return and parameter types
(the unit's own definitions and the declarations of the externals it calls), each
external variable's size, and struct layouts (member offsets, pointee types) to build
entry arguments. Types are flattened into small dicts keyed by DIE offset, so the
result pickles into the harness cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from elftools.elf.elffile import ELFFile


@dataclass
class CType:
    kind: str  # int | bool | enum | ptr | struct | union | array | void | func | float
    size: int = 0
    name: str = ""
    signed: bool = False
    target: int | None = None  # pointee / element type (a key of Types.types)
    count: int = 0  # array length (0: unknown)
    members: list[tuple[str, int, int]] = field(default_factory=list)  # name, offset, type
    enumerators: list[tuple[str, int]] = field(default_factory=list)
    const: bool = False  # pointee is const (for ptr: the target type is const-qualified)


@dataclass
class Function:
    name: str
    ret: int | None  # None: void
    params: list[tuple[str, int | None]]  # (name, type); type None: unknown
    defined: bool  # defined in the unit (not just declared)
    external: bool
    decl_file: str = ""
    decl_line: int = 0
    variadic: bool = False
    noreturn: bool = False  # __attribute__((noreturn)): panic(), __bug(), ...


@dataclass
class Types:
    types: dict[int, CType] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    variables: dict[str, int] = field(default_factory=dict)  # external data: size
    # every file-scope variable, defined or declared (statics too): its type key
    variable_types: dict[str, int] = field(default_factory=dict)
    structs: dict[str, int] = field(default_factory=dict)  # "struct domain" -> type key

    def get(self, key: int | None) -> CType:
        if key is None:
            return CType("void")
        return self.types.get(key, CType("void"))

    def sizeof(self, key: int | None) -> int:
        return self.get(key).size


_QUALIFIERS = ("DW_TAG_typedef", "DW_TAG_volatile_type", "DW_TAG_restrict_type",
               "DW_TAG_atomic_type")


def load(obj: Path) -> Types:
    """Read the DWARF of ``obj`` (a relocatable object built with -g)."""
    out = Types()
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        if not elf.has_dwarf_info():
            return out
        dwarf = elf.get_dwarf_info()
        for cu in dwarf.iter_CUs():
            top = cu.get_top_DIE()
            files = _file_names(dwarf, cu)
            _walk(out, cu, top, files)
    return out


def _file_names(dwarf, cu) -> list[str]:
    try:
        lp = dwarf.line_program_for_CU(cu)
    except Exception:
        return []
    if lp is None:
        return []
    names = []
    for fe in lp["file_entry"]:
        n = fe.name.decode(errors="replace") if isinstance(fe.name, bytes) else str(fe.name)
        names.append(n)
    return names


def _attr(die, name, default=None):
    a = die.attributes.get(name)
    return a.value if a is not None else default


def _name(die) -> str:
    v = _attr(die, "DW_AT_name")
    return v.decode(errors="replace") if isinstance(v, bytes) else (v or "")


def _type_key(die) -> int | None:
    if "DW_AT_type" not in die.attributes:
        return None
    return die.get_DIE_from_attribute("DW_AT_type").offset


def _walk(out: Types, cu, top, files: list[str]) -> None:
    # First pass: every type DIE, so keys resolve through typedefs and qualifiers.
    raw: dict[int, object] = {}
    for die in top.iter_children():
        _collect(die, raw)

    def resolve(key: int | None, depth: int = 0) -> int | None:
        """Strip typedefs and qualifiers (const is remembered on pointers)."""
        while key is not None and depth < 64:
            die = raw.get(key)
            if die is None:
                return key
            if die.tag in _QUALIFIERS or die.tag == "DW_TAG_const_type":
                key = _type_key(die)
                depth += 1
                continue
            return key
        return key

    def is_const(key: int | None) -> bool:
        depth = 0
        while key is not None and depth < 64:
            die = raw.get(key)
            if die is None:
                return False
            if die.tag == "DW_TAG_const_type":
                return True
            if die.tag in _QUALIFIERS:
                key = _type_key(die)
                depth += 1
                continue
            return False
        return False

    def build(key: int | None) -> int | None:
        key = resolve(key)
        if key is None:
            return None
        if key in out.types:
            return key
        die = raw.get(key)
        if die is None:
            return None
        t = CType("void")
        out.types[key] = t  # placeholder first: structs refer to themselves
        size = _attr(die, "DW_AT_byte_size", 0) or 0
        if die.tag == "DW_TAG_base_type":
            enc = _attr(die, "DW_AT_encoding", 0)
            t.kind = "bool" if enc == 0x02 else ("float" if enc in (0x04, 0x03) else "int")
            t.signed = enc in (0x05, 0x06)
            t.size, t.name = size, _name(die)
        elif die.tag == "DW_TAG_pointer_type":
            t.kind, t.size = "ptr", size or 8
            tgt = _type_key(die)
            t.const = is_const(tgt)
            t.target = build(tgt)
        elif die.tag in ("DW_TAG_structure_type", "DW_TAG_union_type"):
            t.kind = "struct" if die.tag == "DW_TAG_structure_type" else "union"
            t.size, t.name = size, _name(die)
            if t.name and not _attr(die, "DW_AT_declaration"):
                out.structs.setdefault(f"{t.kind} {t.name}", key)
            for m in die.iter_children():
                if m.tag != "DW_TAG_member":
                    continue
                off = _attr(m, "DW_AT_data_member_location", 0)
                if not isinstance(off, int):
                    off = 0
                if "DW_AT_bit_size" in m.attributes:
                    continue  # bitfields are never pointers; zero is their state
                t.members.append((_name(m), off, build(_type_key(m))))
        elif die.tag == "DW_TAG_enumeration_type":
            t.kind, t.size, t.name = "enum", size or 4, _name(die)
            t.enumerators = [(_name(e), int(_attr(e, "DW_AT_const_value", 0)))
                             for e in die.iter_children() if e.tag == "DW_TAG_enumerator"]
            t.signed = any(v < 0 for _, v in t.enumerators)
        elif die.tag == "DW_TAG_array_type":
            t.kind = "array"
            t.target = build(_type_key(die))
            count = 0
            for sub in die.iter_children():
                if sub.tag == "DW_TAG_subrange_type":
                    if "DW_AT_count" in sub.attributes:
                        count = _attr(sub, "DW_AT_count", 0)
                    elif "DW_AT_upper_bound" in sub.attributes:
                        ub = _attr(sub, "DW_AT_upper_bound", -1)
                        count = ub + 1 if isinstance(ub, int) else 0
                    break
            t.count = count if isinstance(count, int) else 0
            t.size = t.count * out.sizeof(t.target)
        elif die.tag == "DW_TAG_subroutine_type":
            t.kind, t.size = "func", 1
        else:
            t.kind, t.size = "void", size
        return key

    for key in raw:
        build(key)

    for die in top.iter_children():
        if die.tag == "DW_TAG_subprogram":
            name = _name(die)
            if not name:
                continue
            params: list[tuple[str, int | None]] = []
            variadic = False
            for p in die.iter_children():
                if p.tag == "DW_TAG_formal_parameter":
                    params.append((_name(p), build(_type_key(p))))
                elif p.tag == "DW_TAG_unspecified_parameters":
                    variadic = True
            fi = _attr(die, "DW_AT_decl_file", 0) or 0
            fn = Function(
                name=name, ret=build(_type_key(die)), params=params,
                defined=not _attr(die, "DW_AT_declaration", False)
                and ("DW_AT_low_pc" in die.attributes or "DW_AT_inline" in die.attributes),
                external=bool(_attr(die, "DW_AT_external", False)),
                decl_file=files[fi - 1] if 0 < fi <= len(files) else "",
                decl_line=_attr(die, "DW_AT_decl_line", 0) or 0,
                variadic=variadic,
                noreturn=bool(_attr(die, "DW_AT_noreturn", False)),
            )
            old = out.functions.get(name)
            if old is None or (fn.defined and not old.defined):
                out.functions[name] = fn
        elif die.tag == "DW_TAG_variable":
            key = build(_type_key(die))
            if _name(die) and key is not None:
                out.variable_types.setdefault(_name(die), key)
            if _attr(die, "DW_AT_declaration", False):
                out.variables[_name(die)] = out.sizeof(key)


def _collect(die, raw: dict) -> None:
    if die.tag.endswith("_type") or die.tag == "DW_TAG_typedef":
        raw[die.offset] = die
    for child in die.iter_children():
        if child.tag in ("DW_TAG_member", "DW_TAG_enumerator", "DW_TAG_subrange_type",
                         "DW_TAG_formal_parameter"):
            continue
        _collect(child, raw)
