"""Stubs for every external symbol a lifted unit leaves undefined.

A function becomes a recording stub: it hands its six integer argument registers and
its return address to the runtime's ``xv_stub``, which logs the call and returns the
alternative the driver chose (``explore.py`` sends each stub's alternatives, derived
from the resource model or from the DWARF type). Struct returns keep the ABI: up to 16
bytes in registers, larger ones through the caller's hidden pointer (gcc does that
when the stub is declared with a struct of the same size). Data becomes a zero-filled
object of its DWARF size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from verifier.generic.dwarf import Types

UNKNOWN_DATA_SIZE = 1 << 16  # an external array of unknown length (extern T x[])


@dataclass
class Stub:
    name: str  # symbol in the unit (after any libc rename: xv_ext_<name>)
    kind: str  # "func" | "data"
    shown: str = ""  # the tree's name
    ret: int | None = None  # DWARF type key (None: void or unknown)
    ret_size: int = 8
    params: list[int | None] = field(default_factory=list)
    regs: list[int | None] = field(default_factory=list)  # param -> argument register
    size: int = 0  # data
    typed: bool = True  # DWARF knew it
    noreturn: bool = False  # never returns (panic): the path ends there

    @property
    def label(self) -> str:
        return self.shown or self.name


def call_targets(obj: Path) -> set[str]:
    """Symbols the object calls (PLT32 relocations): functions even without DWARF."""
    from elftools.elf.elffile import ELFFile
    from elftools.elf.relocation import RelocationSection

    out: set[str] = set()
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if not isinstance(sec, RelocationSection) or ".debug" in sec.name:
                continue
            symtab = elf.get_section(sec["sh_link"])
            for r in sec.iter_relocations():
                if r["r_info_type"] in (4,):  # R_X86_64_PLT32
                    out.add(symtab.get_symbol(r["r_info_sym"]).name)
    return out


def _regs(types: Types, params: list[int | None]) -> list[int | None]:
    """SysV: which integer argument register carries each parameter (None: memory)."""
    out: list[int | None] = []
    nxt = 0
    for p in params:
        t = types.get(p)
        size = t.size if t.kind in ("struct", "union", "array") else 8
        need = 1 if size <= 8 else (2 if size <= 16 else 0)
        if t.kind == "float" or need == 0 or nxt + need > 6:
            out.append(None)
            continue
        out.append(nxt)
        nxt += need
    return out


def plan(names: list[str], types: Types, calls: set[str], renamed: dict[str, str] | None = None,
         modelled: set[str] | None = None) -> list[Stub]:
    """``modelled``: functions the unit defines that a stub stands in for."""
    renamed = renamed or {}
    modelled = modelled or set()
    out: list[Stub] = []
    for sym in sorted(set(names)):
        shown = renamed.get(sym, sym)
        fn = types.functions.get(shown)
        if fn is not None and (not fn.defined or sym in modelled):
            params = [t for _, t in fn.params]
            rt = types.get(fn.ret) if fn.ret is not None else None
            out.append(Stub(name=sym, shown=shown, kind="func", ret=fn.ret,
                            ret_size=0 if rt is None else max(rt.size, 1), params=params,
                            regs=_regs(types, params), noreturn=fn.noreturn))
        elif shown in types.variables:
            size = types.variables[shown] or UNKNOWN_DATA_SIZE
            out.append(Stub(name=sym, shown=shown, kind="data", size=size))
        elif sym in calls:
            out.append(Stub(name=sym, shown=shown, kind="func", typed=False))
        else:
            out.append(Stub(name=sym, shown=shown, kind="data", size=UNKNOWN_DATA_SIZE,
                            typed=False))
    return out


def render(stub_list: list[Stub], functions: dict[str, str]) -> str:
    """stubs.c: the stubs, the name tables and the callable unit functions."""
    lines = [
        "/* xen-verify generated stubs (not Xen code). */",
        "#include <stdint.h>",
        "#include <string.h>",
        "uint64_t xv_stub(int id, uint64_t ra, const uint64_t *a);",
        "void xv_noreturn(int id) __attribute__((noreturn));",
        "struct xv_r16 { uint64_t lo, hi; };",
        "#define XV_ARGS uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, "
        "uint64_t a5",
        "#define XV_CALL(id) ({ uint64_t *sp_ = (uint64_t *)__builtin_frame_address(0) + 2; "
        "uint64_t a_[8] = {a0, a1, a2, a3, a4, a5, sp_[0], sp_[1]}; "
        "xv_stub(id, (uint64_t)__builtin_return_address(0), a_); })",
    ]
    names = []
    for i, s in enumerate(stub_list):
        names.append(s.label)
        if s.kind == "data":
            lines.append(f"unsigned char {s.name}[{s.size}] __attribute__((aligned(64)));")
        elif s.noreturn:
            lines.append(f"void {s.name}(XV_ARGS) {{ (void)XV_CALL({i}); xv_noreturn({i}); }}")
        elif s.ret_size <= 8:
            lines.append(f"uint64_t {s.name}(XV_ARGS) {{ return XV_CALL({i}); }}")
        elif s.ret_size <= 16:
            lines.append(f"struct xv_r16 {s.name}(XV_ARGS) {{ struct xv_r16 r_ = "
                         f"{{ XV_CALL({i}), 0 }}; return r_; }}")
        else:
            lines.append(f"struct xv_big{i} {{ unsigned char b[{s.ret_size}]; }};")
            lines.append(f"struct xv_big{i} {s.name}(XV_ARGS) {{ struct xv_big{i} r_; "
                         f"memset(&r_, 0, sizeof(r_)); (void)XV_CALL({i}); return r_; }}")
    lines.append("const char *const xv_stub_names[] = {")
    lines += [f'    "{n}",' for n in names]
    lines.append("    0 };")
    lines.append(f"const int xv_nstubs = {len(stub_list)};")
    for sym in functions.values():
        lines.append(f"extern char {sym}[];")
    lines.append("const char *const xv_fn_names[] = {")
    lines += [f'    "{fn}",' for fn in functions]
    lines.append("    0 };")
    lines.append("void *const xv_fn_addrs[] = {")
    lines += [f"    (void *){sym}," for sym in functions.values()]
    lines.append("    0 };")
    lines.append(f"const int xv_nfns = {len(functions)};")
    return "\n".join(lines) + "\n"
