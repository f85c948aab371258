"""Source code as text: a tree of source files split into functions and classes.

    corpus = load_code("python-stdlib", "train")        # TextCorpus of code units
    pairs = docstring_pairs("python-stdlib", "test")    # (docstring queries, code) held out

Specs:
    python-stdlib           the Python standard library installed with this interpreter
                            (``sysconfig.get_paths()["stdlib"]``), test folders and
                            ``test_*.py`` files excluded, as are site-packages
    code:PATH[:ext=py,js]   a source tree (or one file); .py by default

A ``.py`` file is parsed with ``ast`` and split into units: every function or method that is
not nested inside another function (nested functions stay inside their parent), and every
class as its own unit holding its header and body *without* its methods (each of which is a
unit of its own), so each line of a definition belongs to exactly one unit; module-level
statements outside definitions are dropped. Files of other extensions are not parsed: each
whole file is one unit (no heuristic splitting).

A unit's text is its source (decorators included, dedented) with its docstring removed: the
docstring is kept aside as the unit's natural-language description, the query of the
docstring→code retrieval evaluation, so an encoder cannot match a query to the code by
reading the same words. The label of a unit is the top-level package (or folder) its file
lies in; files at the top level share the class ``(top level)``.

Splits are by module: a hash of the file's path relative to the root sends ~20% of the files
to test, so held-out modules are never seen while pretraining and every unit of a file falls
on the same side. A file that is not UTF-8 or does not parse is an error naming it; with
``skip_bad`` it is skipped and counted (the built-in standard library always skips, counted).
"""

from __future__ import annotations

import ast
import functools
import inspect
import os
import re
import sysconfig
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfsup.data.split import in_test_split
from selfsup.errors import SelfsupError

CODE_SOURCES: dict[str, str] = {
    "python-stdlib": (
        "the Python standard library of this interpreter (tests excluded): functions, methods "
        "and classes (docstrings removed, kept as retrieval queries), labelled by top-level "
        "package; ~20% of the modules to test by hash; no download"
    ),
    "code": (
        "your own source tree, code:PATH[:ext=py,js]: .py files split into functions/classes "
        "with ast (other extensions: one unit per file), labelled by top-level folder; ~20% "
        "of the files to test by hash of the path"
    ),
}
"""The code sources ``load_texts`` knows, with their lines for ``selfsup list``."""

CODE_TEST_FRACTION = 0.2
TOP_LEVEL = "(top level)"
"""The class of units whose file lies directly in the root."""

_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}


@dataclass
class CodeUnit:
    """One function, method or class: its source without docstring, and that docstring."""

    name: str
    code: str
    docstring: str | None


@dataclass
class CodeTree:
    """The units of both splits of a source tree, in file order."""

    units: list[CodeUnit] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    in_test: list[bool] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def is_code_spec(spec: str) -> bool:
    """Whether ``spec`` names a code source (``python-stdlib`` or ``code:PATH``)."""
    return spec.partition(":")[0].strip().lower() in CODE_SOURCES


# --- splitting one file ----------------------------------------------------------------------


def docstring_node(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def _start(node: ast.AST) -> int:
    """The first line of a definition, decorators included (1-based)."""
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno, *(d.lineno for d in decorators)])  # type: ignore[attr-defined]


Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _unit(lines: list[str], node: Definition, cut: list[tuple[int, int]]) -> CodeUnit:
    """The unit of ``node``: its lines minus the line ranges ``cut`` (its methods) and its
    docstring, dedented."""
    doc = docstring_node(node)
    if doc is not None:
        cut = [*cut, (doc.lineno, doc.end_lineno or doc.lineno)]
    keep = [
        lines[n - 1]
        for n in range(_start(node), (node.end_lineno or node.lineno) + 1)
        if not any(a <= n <= b for a, b in cut)
    ]
    text = textwrap.dedent("\n".join(keep)).strip("\n")
    return CodeUnit(node.name, text, ast.get_docstring(node))


def definitions(tree: ast.Module) -> list[tuple[Definition, list[Definition]]]:
    """Every unit's definition in source order, with the member definitions it leaves out: a
    class's methods and inner classes (units of their own); a function keeps its nested defs."""
    found: list[tuple[Definition, list[Definition]]] = []

    def visit(body: Sequence[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((node, []))  # nested defs stay inside
            elif isinstance(node, ast.ClassDef):
                members = [
                    n
                    for n in node.body
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                ]
                found.append((node, members))
                visit(members)
            elif isinstance(node, ast.If | ast.Try | ast.With):  # `if sys.platform ...:` defs
                for part in ("body", "orelse", "finalbody"):
                    visit(getattr(node, part, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def split_python(source: str, path: str = "<string>") -> list[CodeUnit]:
    """The units of one Python file (see the module docstring), in source order.

    Raises:
        SyntaxError: the source does not parse.
    """
    lines = source.splitlines()
    return [
        _unit(lines, node, [(_start(n), n.end_lineno or n.lineno) for n in members])
        for node, members in definitions(ast.parse(source, filename=path))
    ]


def query_of(docstring: str) -> str:
    """The retrieval query of a docstring: its first paragraph, whitespace collapsed."""
    first = inspect.cleandoc(docstring).split("\n\n", 1)[0]
    return " ".join(first.split())


# --- reading a tree --------------------------------------------------------------------------


def stdlib_root() -> Path:
    """The folder of this interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _parse_spec(spec: str) -> tuple[Path, tuple[str, ...], bool]:
    """(root, extensions, whether it is the standard library) of a code spec."""
    name, _, argument = spec.partition(":")
    if name.strip().lower() == "python-stdlib":
        return stdlib_root(), (".py",), True
    path, _, options = argument.strip().partition(":ext=")
    if not path:
        raise SelfsupError("code needs a path: --data code:PATH (a source folder or file)")
    extensions = tuple(
        "." + e.strip().lstrip(".").lower() for e in (options or "py").split(",") if e.strip()
    )
    if not extensions:
        raise SelfsupError(f"{spec!r}: name extensions after :ext=, e.g. code:{path}:ext=py,js")
    return Path(path).expanduser(), extensions, False


def source_files(root: Path, extensions: tuple[str, ...], stdlib: bool) -> list[str]:
    """Relative paths of the source files under ``root``, sorted; hidden folders, test
    folders (always for the standard library) and ``test_*.py`` are left out."""
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and not (stdlib and d in _EXCLUDED_DIRS)
        )
        rel = Path(dirpath).relative_to(root)
        files += [
            (rel / f).as_posix()
            for f in filenames
            if not f.startswith(".")
            and f.lower().endswith(extensions)
            and not (stdlib and f.startswith("test_"))
        ]
    return sorted(files)


def package_of(relative: str) -> str:
    head, slash, _ = relative.partition("/")
    return head if slash else TOP_LEVEL


@functools.lru_cache(maxsize=4)
def read_tree(spec: str, skip_bad: bool = False) -> CodeTree:
    """Every unit of the source tree ``spec`` names, with labels, sides and skipped files
    (cached: both splits and the retrieval pairs read it once)."""
    root, extensions, stdlib = _parse_spec(spec)
    skip_bad = skip_bad or stdlib
    if not root.exists():
        raise SelfsupError(f"{root} does not exist; check the path after code:")
    if root.is_file():
        files, root = [root.name], root.parent
    else:
        files = source_files(root, extensions, stdlib)
    if not files:
        raise SelfsupError(
            f"no {', '.join(extensions)} files found under {root}; point code:PATH at a source "
            "tree or name the extensions with :ext=py,js"
        )
    tree = CodeTree()
    for relative in files:
        try:
            units = _file_units(root / relative)
        except SelfsupError:
            if not skip_bad:
                raise
            tree.skipped.append(relative)
            continue
        test = in_test_split(relative, CODE_TEST_FRACTION)
        for unit in units:
            tree.units.append(unit)
            tree.labels.append(package_of(relative))
            tree.in_test.append(test)
    if not tree.units:
        raise SelfsupError(f"{spec!r} holds no functions, classes or non-empty files")
    return tree


def _file_units(path: Path) -> list[CodeUnit]:
    """The units of one file; a one-line error for a file that is not UTF-8 or not Python."""
    try:
        source = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise SelfsupError(
            f"{path} is not UTF-8 (byte {e.start}); convert it or pass --skip-bad"
        ) from None
    if path.suffix.lower() != ".py":
        text = source.strip()
        return [CodeUnit(path.stem, text, None)] if text else []
    try:
        return [u for u in split_python(source, str(path)) if u.code.strip()]
    except (SyntaxError, ValueError) as e:  # ValueError: null bytes
        line = f" line {e.lineno}" if isinstance(e, SyntaxError) and e.lineno else ""
        raise SelfsupError(
            f"{path}{line} does not parse as Python ({e.__class__.__name__}); fix it or pass "
            "--skip-bad"
        ) from None


def code_split(spec: str, split: str, skip_bad: bool = False) -> tuple[CodeTree, list[int]]:
    """The tree of ``spec`` and the indices of its units in ``split``, checked non-empty."""
    tree = read_tree(spec, skip_bad)
    want = split == "test"
    keep = [i for i, t in enumerate(tree.in_test) if t == want]
    if not keep:
        raise SelfsupError(
            f"{spec!r} has no units in the {split} split ({len(tree.units)} units; ~"
            f"{CODE_TEST_FRACTION:.0%} of the files go to test by a hash of the path): add files"
        )
    return tree, keep


def docstring_pairs(
    spec: str, split: str = "test", skip_bad: bool = False
) -> tuple[list[str], list[str]]:
    """The retrieval pairs of ``split``: (queries, codes) of its units that have a docstring
    whose first paragraph holds a word; query i describes code i."""
    tree, keep = code_split(spec, split, skip_bad)
    queries, codes = [], []
    for i in keep:
        unit = tree.units[i]
        query = query_of(unit.docstring) if unit.docstring else ""
        if re.search(r"\w", query):
            queries.append(query)
            codes.append(unit.code)
    return queries, codes
