"""Locate the roles in a Xen tree and extract their text verbatim, with provenance.

A *role* is what a piece of code does for the check pack, independent of its name in
a given version (``alloc_l4_table`` in 4.6, ``promote_l4_table`` in 4.14). Definitions
are found with tree-sitter-c and cross-checked with a comment/string-aware brace
scanner; the text handed to gcc is the tree's own, byte for byte, preceded by a
``#line`` directive so diagnostics point at the tree's file:line.

Constants (``PGT_*``, ``RO_MPT_VIRT_START``, ``VMASST_TYPE_m2p_strict``, ``ERESTART``)
are taken from the tree's headers as the macro closure of the names needed.

``analyse`` runs pycparser on a preprocessed copy (after counted normalisations of
what pycparser 3.12 rejects) and returns the free identifiers of a piece.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from verifier.model import VerifyError
from verifier.tree import read_tree_file

# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Extracted:
    """One piece of a tree's text and where it came from."""

    role: str
    name: str  # function name (for a statement: the enclosing function)
    file: str  # path relative to the tree root
    first_line: int  # 1-based, inclusive
    last_line: int
    text: str  # verbatim
    commit: str | None = None
    kind: str = "function"  # "function" | "statement" | "macro"
    # statement pieces: the enclosing function's declarations of the locals used,
    # verbatim ("unsigned int i;"), and the file-local macros used (#define lines).
    locals: tuple[str, ...] = ()
    macros: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def location(self) -> str:
        return f"{self.file}:{self.first_line}-{self.last_line}"

    def with_line(self) -> str:
        """The text preceded by a ``#line`` directive naming the tree file (and commit)."""
        return f'{line_directive(self.first_line, self.file, self.commit)}\n{self.text}\n'


def line_directive(line: int, file: str, commit: str | None) -> str:
    """``#line`` naming a tree file; the commit rides along as a comment gcc ignores."""
    return f'#line {line} "{file}"' + (f" /* commit {commit} */" if commit else "")


@dataclass
class Constants:
    """``#define`` lines copied from the tree (closure of the names asked for)."""

    defines: list[tuple[str, str, int, str]] = field(default_factory=list)  # name,file,line,text
    missing: list[str] = field(default_factory=list)

    def render(self, commit: str | None = None) -> str:
        out = []
        for _name, file, line, text in self.defines:
            out.append(f"{line_directive(line, file, commit)}\n{text}")
        return "\n".join(out) + "\n"


ROLES = (
    "restore_fixup",
    "fill_ro_mpt",
    "l4_validate",
    "l4_devalidate",
    "l4_slot_init",
    "page_lock",
)

# role -> (file candidates, function names in preference order)
_FUNCTION_ROLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "fill_ro_mpt": (("xen/arch/x86/mm.c",), ("fill_ro_mpt",)),
    "l4_validate": (
        ("xen/arch/x86/mm.c", "xen/arch/x86/pv/mm.c"),
        ("promote_l4_table", "alloc_l4_table"),
    ),
    "l4_devalidate": (
        ("xen/arch/x86/mm.c", "xen/arch/x86/pv/mm.c"),
        ("demote_l4_table", "free_l4_table"),
    ),
    "l4_slot_init": (
        ("xen/arch/x86/mm.c", "xen/arch/x86/pv/mm.c", "xen/arch/x86/pv/domain.c"),
        ("init_xen_l4_slots", "init_guest_l4_table"),
    ),
    "page_lock": (("xen/arch/x86/mm.c",), ("page_lock_unsafe", "page_lock")),
}

# --------------------------------------------------------------------------- locating


@lru_cache(maxsize=1)
def _parser():  # type: ignore[no-untyped-def]
    import tree_sitter_c
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_c.language()))


def _declarator_name(node) -> str | None:  # type: ignore[no-untyped-def]
    d = node.child_by_field_name("declarator")
    while d is not None and d.type != "function_declarator":
        d = d.child_by_field_name("declarator")
    if d is None:
        return None
    inner = d.child_by_field_name("declarator")
    while inner is not None and inner.type != "identifier":
        inner = inner.child_by_field_name("declarator")
    return inner.text.decode() if inner is not None else None


def ts_functions(src: bytes) -> dict[str, tuple[int, int]]:
    """Function definitions found by tree-sitter: name -> (first_line, last_line), 1-based."""
    tree = _parser().parse(src)
    found: dict[str, tuple[int, int]] = {}
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            name = _declarator_name(node)
            if name and name not in found:
                found[name] = (node.start_point[0] + 1, node.end_point[0] + 1)
            continue
        stack.extend(node.children)
    return found


def mask_comments_strings(text: str) -> str:
    """The text with comments and string/char literal contents blanked (lengths kept)."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            for k in range(i, j):
                if out[k] != "\n":
                    out[k] = " "
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            for k in range(i, j):
                out[k] = " "
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            for k in range(i + 1, min(j, n)):
                out[k] = " "
            i = j + 1
        else:
            i += 1
    return "".join(out)


def brace_end(masked: str, start: int) -> int:
    """Offset just past the ``}`` matching the first ``{`` at or after ``start``."""
    i = masked.index("{", start)
    depth = 0
    while i < len(masked):
        ch = masked[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise VerifyError("unbalanced braces")


def _line_offsets(text: str) -> list[int]:
    offs = [0]
    for m in re.finditer("\n", text):
        offs.append(m.end())
    return offs


def locate_function(path: Path, rel: str, name: str, role: str, commit: str | None) -> Extracted:
    """Extract function ``name`` from ``path``; tree-sitter and the brace scanner must agree."""
    text = read_tree_file(path)
    found = ts_functions(text.encode())
    if name not in found:
        raise KeyError(name)
    first, last = found[name]
    lines = text.split("\n")
    offs = _line_offsets(text)
    masked = mask_comments_strings(text)
    end = brace_end(masked, offs[first - 1])
    scan_last = text.count("\n", 0, end) + 1
    notes: tuple[str, ...] = ()
    if scan_last != last:
        notes = (f"tree-sitter says line {last}, brace scanner {scan_last}: using the scanner",)
        last = scan_last
    return Extracted(
        role=role,
        name=name,
        file=rel,
        first_line=first,
        last_line=last,
        text="\n".join(lines[first - 1 : last]),
        commit=commit,
        notes=notes,
    )


_IDENT = re.compile(r"[A-Za-z_]\w*")


def _restore_fixup(tree: Path, commit: str | None) -> Extracted | None:
    """The ``if ( v->vcpu_id == 0 )`` statement of arch_set_info_guest that sets vm_assist."""
    rel = "xen/arch/x86/domain.c"
    path = tree / rel
    if not path.exists():
        return None
    text = read_tree_file(path)
    src = text.encode()
    tree_ = _parser().parse(src)
    fn = None
    stack = [tree_.root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition" and _declarator_name(node) == "arch_set_info_guest":
            fn = node
            break
        stack.extend(node.children)
    if fn is None:
        return None
    target = None
    stack = [fn]
    while stack:
        node = stack.pop()
        if node.type == "if_statement":
            cond = node.child_by_field_name("condition")
            ctext = re.sub(r"\s+", "", cond.text.decode()) if cond is not None else ""
            body = node.child_by_field_name("consequence")
            btext = re.sub(r"\s+", "", body.text.decode()) if body is not None else ""
            if ctext == "(v->vcpu_id==0)" and "d->vm_assist=c(vm_assist)" in btext:
                target = node
                break
        stack.extend(node.children)
    if target is None:
        return None
    first, last = target.start_point[0] + 1, target.end_point[0] + 1
    lines = text.split("\n")
    stmt = "\n".join(lines[first - 1 : last])
    # Cross-check the end with the brace scanner when the statement has braces.
    body = target.child_by_field_name("consequence")
    if body is not None and body.type == "compound_statement":
        offs = _line_offsets(text)
        end = brace_end(mask_comments_strings(text), offs[first - 1])
        if text.count("\n", 0, end) + 1 != last:
            raise VerifyError(f"{rel}: tree-sitter and brace scanner disagree on the fixup block")
    used = set(_IDENT.findall(mask_comments_strings(stmt)))
    # File-local macros the statement uses (c(fld)): the #define lines before it.
    macros: list[str] = []
    before = text[: _line_offsets(text)[first - 1]]
    for m in re.finditer(r"^#\s*define\s+(\w+)\(.*$", before, re.M):
        if m.group(1) in used and m.group(1) not in [x.split()[1].split("(")[0] for x in macros]:
            macros.append(m.group(0))
            used |= set(_IDENT.findall(m.group(0).split(")", 1)[1]))
    # Locals of the enclosing function that the statement uses, declared verbatim.
    decls: list[str] = []
    fbody = fn.child_by_field_name("body")
    params = fn.child_by_field_name("declarator")
    while params is not None and params.type != "function_declarator":
        params = params.child_by_field_name("declarator")
    local_names: list[str] = []
    for child in (fbody.children if fbody is not None else []):
        if child.type != "declaration":
            continue
        dtext = child.text.decode()
        names = [
            _IDENT.findall(d.text.decode())[-1]
            for d in child.children_by_field_name("declarator")
            if d.type in ("identifier", "init_declarator", "pointer_declarator")
            for d in [d.child_by_field_name("declarator") or d]
        ]
        if any(n in used for n in names):
            decl = re.sub(r"\s*=[^,;]*", "", dtext)  # declarations, not initialisers
            decls.append(decl)
            local_names.extend(names)
    return Extracted(
        role="restore_fixup",
        name="arch_set_info_guest",
        file=rel,
        first_line=first,
        last_line=last,
        text=stmt,
        commit=commit,
        kind="statement",
        locals=tuple(decls),
        macros=tuple(macros),
    )


def has_walk(piece: Extracted | None) -> bool:
    """Whether a restore_fixup statement contains the L4 walk (the fix) or only the assignment."""
    return piece is not None and "page_list_remove_head" in piece.text


def find_roles(tree: Path, commit: str | None = None) -> dict[str, Extracted | None]:
    """Every role of ``ROLES`` located in ``tree``; None where the version lacks it.

    ``restore_fixup`` is returned whenever the vCPU-0 statement exists (also before
    the fix, where it is the bare assignment): ``has_walk`` tells the two apart.
    """
    tree = Path(tree)
    if not (tree / "xen" / "arch" / "x86").is_dir():
        raise VerifyError(f"{tree}: not a Xen tree (no xen/arch/x86)")
    out: dict[str, Extracted | None] = {"restore_fixup": _restore_fixup(tree, commit)}
    for role, (files, names) in _FUNCTION_ROLES.items():
        out[role] = None
        for rel in files:
            if not (tree / rel).exists():
                continue
            for name in names:
                try:
                    out[role] = locate_function(tree / rel, rel, name, role, commit)
                except KeyError:
                    continue
                break
            if out[role] is not None:
                break
    # page_unlock travels with page_lock.
    if out["page_lock"] is not None:
        try:
            out["page_unlock"] = locate_function(
                tree / out["page_lock"].file, out["page_lock"].file, "page_unlock", "page_lock",
                commit,
            )
        except KeyError:
            out["page_lock"] = None
            out["page_unlock"] = None
    else:
        out["page_unlock"] = None
    return out


# --------------------------------------------------------------------------- constants


def header_dirs(tree: Path) -> list[Path]:
    """The x86 headers in search order (4.17 moved them to xen/arch/x86/include)."""
    cands = [
        "xen/arch/x86/include/asm",
        "xen/include/asm-x86",
        "xen/arch/x86/include/asm/x86_64",
        "xen/include/asm-x86/x86_64",
        "xen/include/public",
        "xen/include/xen",
    ]
    return [tree / c for c in cands if (tree / c).is_dir()]


_DEFINE = re.compile(
    r"^[ \t]*#[ \t]*define[ \t]+(\w+)(\([^)]*\))?[ \t]*((?:[^\n]*\\\n)*[^\n]*)", re.M
)
_ERRNO = re.compile(r"^XEN_ERRNO\((\w+),\s*(\d+)\)", re.M)


def _asm_only_lines(text: str) -> set[int]:
    """Line numbers (1-based) inside ``#ifdef __ASSEMBLY__`` branches (not C's view)."""
    out: set[int] = set()
    stack: list[bool | str] = []  # per open conditional: is this branch assembler-only?
    for no, line in enumerate(text.split("\n"), start=1):
        s = line.strip()
        m = re.match(r"#\s*(ifdef|ifndef|if|elif|else|endif)\b(.*)", s)
        if m:
            kw, rest = m.group(1), m.group(2)
            asm = "__ASSEMBLY__" in rest or "__ASSEMBLER__" in rest
            if kw == "ifdef":
                stack.append(asm)
            elif kw == "ifndef":
                stack.append("ifndef-asm" if asm else False)  # its #else is asm-only
            elif kw == "if":
                stack.append(asm and "!" not in rest)
            elif kw == "else" and stack:
                top = stack[-1]
                stack[-1] = True if top == "ifndef-asm" else (False if top is True else top)
            elif kw == "elif" and stack:
                stack[-1] = False
            elif kw == "endif" and stack:
                stack.pop()
            continue
        if any(x is True for x in stack):
            out.add(no)
    return out


def _index_file(tree: Path, f: Path, index: dict[str, tuple[str, int, str, str]]) -> None:
    text = read_tree_file(f)
    rel = str(f.relative_to(tree))
    asm = _asm_only_lines(text) if "__ASSEMBL" in text else set()
    for m in _DEFINE.finditer(text):
        name = m.group(1)
        if name in index:
            continue
        line = text.count("\n", 0, m.start()) + 1
        if line in asm:
            continue
        body = m.group(3) or ""
        index[name] = (rel, line, m.group(0).strip(), (m.group(2) or "") + " " + body)
    for m in _ERRNO.finditer(text):
        name = m.group(1)
        if name not in index:
            line = text.count("\n", 0, m.start()) + 1
            index[name] = (rel, line, f"#define {name} {m.group(2)}", m.group(2))


def _identity(files: list[Path]) -> tuple[tuple[str, int, int, int], ...]:
    """What the caches below are keyed by besides the tree's path: one worktree path
    serves ref after ref (a run's checkout is reused), so the path alone would hand one
    ref's headers to the next. A rewritten file changes its mtime, size or inode."""
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_size, st.st_mtime_ns, st.st_ino))
    return tuple(out)


def file_defines(tree: Path, rel: str) -> dict[str, tuple[str, int, str, str]]:
    """File-local ``#define``s of one source file (e.g. mm.c's ``PTF_*``)."""
    return _file_defines(tree, rel, _identity([tree / rel]))


@lru_cache(maxsize=32)
def _file_defines(tree: Path, rel: str, _identity: tuple
                  ) -> dict[str, tuple[str, int, str, str]]:
    index: dict[str, tuple[str, int, str, str]] = {}
    if (tree / rel).exists():
        _index_file(tree, tree / rel, index)
    return index


def _define_index(tree: Path) -> dict[str, tuple[str, int, str, str]]:
    """name -> (file, line, full #define text, body) over the x86 + public headers.

    The first C-visible definition wins (``#ifdef __ASSEMBLY__`` branches are skipped).
    """
    files: list[Path] = []
    for d in header_dirs(tree):
        files.extend(sorted(d.glob("*.h")))
    return _define_index_of(tree, _identity(files))


@lru_cache(maxsize=8)
def _define_index_of(tree: Path, identity: tuple) -> dict[str, tuple[str, int, str, str]]:
    index: dict[str, tuple[str, int, str, str]] = {}
    for name, *_ in identity:
        _index_file(tree, Path(name), index)
    return index


def _strip_comments(s: str) -> str:
    return re.sub(r"/\*.*?\*/", " ", s, flags=re.S)


def constants(
    tree: Path,
    names: list[str],
    provided: set[str] | None = None,
    sources: tuple[str, ...] = (),
) -> Constants:
    """The ``#define`` closure of ``names`` from the tree's headers, in dependency order.

    ``provided`` names (the environment's) are never taken; ``sources`` are tree files
    whose file-local defines are a fallback (mm.c's ``PTF_*``).
    """
    index = dict(_define_index(Path(tree)))
    for rel in sources:
        for k, v in file_defines(Path(tree), rel).items():
            index.setdefault(k, v)
    provided = provided or set()
    out = Constants()
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done or name in provided:
            return
        done.add(name)
        if name not in index:
            out.missing.append(name)
            return
        rel, line, text, body = index[name]
        params = set(_IDENT.findall(body.split(")")[0])) if body.startswith("(") else set()
        for ident in _IDENT.findall(_strip_comments(body)):
            if ident in params or ident == name or re.fullmatch(r"U?L*|u?l*", ident):
                continue
            if ident in index:
                visit(ident)
        out.defines.append((name, rel, line, _strip_comments(text)))

    for n in names:
        visit(n)
    return out


# --------------------------------------------------------------------------- analysis


@dataclass
class Analysis:
    free: set[str]  # identifiers used but not declared in the unit
    called: set[str]  # of those, the ones called as functions
    normalisations: dict[str, int]


def _replace_balanced(text: str, start: str, replacement: str) -> tuple[str, int]:
    """Replace each ``start`` match plus its balanced parenthesised tail; count them.

    ``start`` ends in the opening parenthesis (or two, for ``__attribute__((``).
    """
    n = 0
    while m := re.search(start, text):
        depth, i = 0, m.start() + m.group(0).index("(")
        while i < len(text):
            depth += text[i] == "("
            depth -= text[i] == ")"
            i += 1
            if depth == 0:
                break
        text = text[: m.start()] + replacement + text[i:]
        n += 1
    return text, n


def normalise_for_pycparser(text: str) -> tuple[str, dict[str, int]]:
    """A copy of preprocessed C that pycparser 3.12 accepts, and how many edits of each kind."""
    counts: dict[str, int] = {}

    def count(kind: str, n: int) -> None:
        if n:
            counts[kind] = counts.get(kind, 0) + n

    text = re.sub(r"^#.*$", "", text, flags=re.M)  # line markers
    text, n = _replace_balanced(text, r"__attribute__\s*\(\(", "")  # nested parentheses
    count("__attribute__", n)
    for kw in ("__extension__", "__inline__", "__inline", "__restrict", "__volatile__"):
        text, k = re.subn(rf"\b{kw}\b", "", text)
        count(kw, k)
    text, k = re.subn(r"\?\s*:", "?0:", text)  # a ?: b -> a ? 0 : b (same identifiers)
    count("?:", k)
    text, n = _replace_balanced(text, r"\b(?:__typeof__|__typeof|typeof)\s*\(", "long")
    count("typeof", n)
    text, k = re.subn(r"\b(?:__asm__|asm)\b[^;]*;", ";", text)
    count("asm", k)
    return text, counts


def analyse(preprocessed: str) -> Analysis:
    """Free identifiers of a preprocessed unit (pycparser on a normalised copy)."""
    from pycparser import c_ast, c_parser

    text, counts = normalise_for_pycparser(preprocessed)
    try:
        ast = c_parser.CParser().parse(text, "<harness>")
    except Exception as e:  # pycparser's ParseError and friends
        raise VerifyError(f"pycparser could not analyse the harness unit: {e}") from None

    declared: set[str] = set()
    used: dict[str, bool] = {}

    class V(c_ast.NodeVisitor):
        def visit_Decl(self, node):  # type: ignore[no-untyped-def]
            if node.name:
                declared.add(node.name)
            self.generic_visit(node)

        def visit_Typedef(self, node):  # type: ignore[no-untyped-def]
            declared.add(node.name)
            self.generic_visit(node)

        def visit_Enumerator(self, node):  # type: ignore[no-untyped-def]
            declared.add(node.name)
            self.generic_visit(node)

        def visit_FuncCall(self, node):  # type: ignore[no-untyped-def]
            if isinstance(node.name, c_ast.ID):
                used[node.name.name] = True
            self.generic_visit(node)

        def visit_ID(self, node):  # type: ignore[no-untyped-def]
            used.setdefault(node.name, False)

        def visit_StructRef(self, node):  # type: ignore[no-untyped-def]
            self.visit(node.name)  # the field is not an identifier

        def visit_Label(self, node):  # type: ignore[no-untyped-def]
            self.visit(node.stmt)

        def visit_Goto(self, node):  # type: ignore[no-untyped-def]
            pass

    V().visit(ast)
    free = {n for n in used if n not in declared and not n.startswith("__builtin")}
    return Analysis(free=free, called={n for n in free if used[n]}, normalisations=counts)


def preprocess(source: str, include_dir: Path, defines: tuple[str, ...] = ()) -> str:
    """``gcc -E`` of ``source`` with ``include_dir`` on the include path."""
    from verifier import sandbox  # the source holds patch text: gcc runs sandboxed

    gcc = shutil.which("gcc")
    if gcc is None:
        raise VerifyError("gcc not found: the harness needs gcc")
    inc = Path(include_dir).resolve()
    cmd = [gcc, "-E", "-P", "-std=gnu11", f"-I{inc}", *defines, "-x", "c", "-"]
    proc = sandbox.run(cmd, cwd=inc, readable=[inc], limits=sandbox.Limits(cpu_s=60),
                       timeout_s=90, stdin=source.encode(), max_output=256 << 20)
    if proc.timed_out:
        raise VerifyError("gcc -E did not finish within 90s")
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()[:1]
        raise VerifyError(f"gcc -E failed: {err or ['status ' + str(proc.returncode)]}")
    return proc.stdout.decode(errors="replace")
