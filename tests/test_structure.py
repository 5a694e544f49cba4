"""The package's structure rules, checked on the source with ``ast`` (nothing is imported or run).

a. imports flow one way: root -> data -> models -> attacks -> analysis -> top
   (a module imports from its own layer or below); ``errors`` imports nothing of
   the library and ``config`` only ``errors``;
b. no function-local imports of library modules;
c. no ``_private`` name of one module used by another;
e. no function longer than :data:`MAX_FUNCTION_LINES` lines of code;
f. notebook code cells are short (:data:`MAX_CELL_LINES` lines of code) and define no functions or
   classes: logic that needs a name belongs in ``mer_lib``; a small loop or lambda is fine;
g. every notebook has one ``parameters`` cell, and all share one kernelspec.

Every failure names the file, the line and the rule.
"""
from __future__ import annotations

import ast
import io
import json
import tokenize
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mer_lib"
TESTS = REPO / "tests"
NOTEBOOKS = REPO / "notebooks"

#: Layer of every first-level name of the package (modules and sub-packages).
LAYERS: dict[str, int] = {
    **dict.fromkeys(("config", "errors", "artifacts", "metrics", "jobs", "progress"), 0),
    "data": 1, "models": 2, "attacks": 3, "analysis": 4,
    **dict.fromkeys(("runner", "regression", "notebook"), 5),
}
LAYER_NAMES = ("root", "data", "models", "attacks", "analysis", "top")
#: Library imports allowed in the root's two base modules (everything else of the root may use them).
BASE_IMPORTS = {"mer_lib.errors": set(), "mer_lib.config": {"mer_lib.errors"}}
MAX_FUNCTION_LINES = 60
#: Statements a notebook cell must not hold (rule f).
NOTEBOOK_FORBIDDEN = {ast.FunctionDef: "a def", ast.AsyncFunctionDef: "a def", ast.ClassDef: "a class"}
#: Longest notebook code cell, in lines of code (rule f).
MAX_CELL_LINES = 16


# --------------------------------------------------------------------------- reading the package
@dataclass(frozen=True)
class Module:
    """One source file of the package."""

    name: str  # dotted, e.g. mer_lib.data.cache (a package: mer_lib.data)
    path: Path
    tree: ast.Module
    source: str
    root: Path = REPO

    @property
    def rel(self) -> str:
        return self.path.relative_to(self.root).as_posix()

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@dataclass(frozen=True)
class Import:
    """One library module (or package) named by an import statement."""

    line: int
    target: str  # the module imported from or imported, e.g. mer_lib.data.cache
    name: str | None  # the imported attribute, for ``from target import name``
    bound: str  # the local name the statement binds


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_modules(root: Path = REPO, package: str = PACKAGE) -> dict[str, Module]:
    """Every ``.py`` file below ``root/package``, parsed, by dotted name."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = module_name(path, root)
        out[name] = Module(name, path, ast.parse(source, str(path)), source, root)
    return out


MODULES = read_modules()


def layer(name: str) -> int | None:
    """Layer of a dotted library name (the package itself is root); ``None`` if unassigned."""
    parts = name.split(".")
    return 0 if len(parts) == 1 else LAYERS.get(parts[1])


def is_library(name: str | None) -> bool:
    return name is not None and (name == PACKAGE or name.startswith(PACKAGE + "."))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def from_base(module: Module, node: ast.ImportFrom) -> str | None:
    """The absolute module a ``from ... import`` reads from (relative imports resolved)."""
    if not node.level:
        return node.module
    package = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports(module: Module, known: set[str], nodes: Iterator[ast.AST] | None = None) -> Iterator[Import]:
    """The library imports among ``nodes`` (default: everywhere in the module, function bodies included)."""
    for node in nodes if nodes is not None else ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_library(alias.name):
                    yield Import(node.lineno, alias.name, None, alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            base = from_base(module, node)
            if not is_library(base):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield Import(node.lineno, sub, None, alias.asname or alias.name)
                else:
                    yield Import(node.lineno, base, alias.name, alias.asname or alias.name)


def function_nodes(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    return (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def local_imports(module: Module, known: set[str]) -> list[Import]:
    """Library imports inside function bodies (each once, however deeply nested)."""
    nodes = {id(n): n for f in function_nodes(module.tree) for n in ast.walk(f) if n is not f}
    return sorted(imports(module, known, iter(nodes.values())), key=lambda i: i.line)


def fail_on(violations: list[str]) -> None:
    if violations:
        pytest.fail(f"{len(violations)} violation(s):\n" + "\n".join(violations), pytrace=False)


# --------------------------------------------------------------------------- a. import direction
def layer_violations(modules: dict[str, Module]) -> list[str]:
    known = set(modules)
    out = []
    for module in modules.values():
        own = layer(module.name)
        if own is None:
            out.append(f"{module.rel}:1: rule a (import layers): module {module.name} has no layer; "
                       f"add it to LAYERS in tests/test_structure.py")
            continue
        for imp in imports(module, known):
            target = layer(imp.target)
            if target is None:
                out.append(f"{module.rel}:{imp.line}: rule a (import layers): {imp.target} has no layer")
            elif target > own:
                out.append(f"{module.rel}:{imp.line}: rule a (import layers): {module.name} "
                           f"({LAYER_NAMES[own]}, layer {own}) imports {imp.target} "
                           f"({LAYER_NAMES[target]}, layer {target}) from a higher layer")
    return out


def base_violations(modules: dict[str, Module]) -> list[str]:
    known = set(modules)
    out = []
    for name, allowed in BASE_IMPORTS.items():
        module = modules[name]
        for imp in imports(module, known):
            if imp.target not in allowed:
                out.append(f"{module.rel}:{imp.line}: rule a (root base modules): {name} may import "
                           f"{sorted(allowed) or 'nothing of mer_lib'}, not {imp.target}")
    return out


def test_imports_flow_one_way():
    fail_on(layer_violations(MODULES))


def test_errors_and_config_are_the_base_of_the_root():
    fail_on(base_violations(MODULES))


# --------------------------------------------------------------------------- b. function-local imports
def local_import_violations(modules: dict[str, Module]) -> list[str]:
    known = set(modules)
    return [f"{m.rel}:{imp.line}: rule b (no function-local imports): "
            f"{imp.target}{'.' + imp.name if imp.name else ''} is imported inside a function; "
            "import it at the top of the module"
            for m in modules.values() for imp in local_imports(m, known)]


def test_no_function_local_imports():
    fail_on(local_import_violations(MODULES))


# --------------------------------------------------------------------------- c. private names
def private_violations(modules: dict[str, Module]) -> list[str]:
    known = set(modules)
    out = []
    for module in modules.values():
        aliases = set()  # local names bound to library modules
        for imp in imports(module, known):
            if imp.name is not None and is_private(imp.name):
                out.append(f"{module.rel}:{imp.line}: rule c (no private imports): {module.name} imports "
                           f"{imp.name} from {imp.target}; make it public if it is shared")
            if any(is_private(part) for part in imp.target.split(".")):
                out.append(f"{module.rel}:{imp.line}: rule c (no private imports): {module.name} imports "
                           f"the private module {imp.target}")
            if imp.name is None:
                aliases.add(imp.bound)
        for node in ast.walk(module.tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.value.id != PACKAGE and is_private(node.attr)):
                out.append(f"{module.rel}:{node.lineno}: rule c (no private imports): {module.name} uses "
                           f"{node.value.id}.{node.attr}, a private name of another module")
    return sorted(set(out), key=lambda s: (s.split(":")[0], int(s.split(":")[1])))


def test_no_private_names_across_modules():
    fail_on(private_violations(MODULES))


# --------------------------------------------------------------------------- e. function length
def code_lines(source: str, tree: ast.Module) -> set[int]:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER, tokenize.ENCODING}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and docstring(node):
            lines -= set(range(node.body[0].lineno, node.body[0].end_lineno + 1))
    return lines


def docstring(node: ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0] if node.body else None
    return isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)


def function_lengths(source: str, tree: ast.Module) -> Iterator[tuple[str, int, int]]:
    """``(qualified name, def line, code lines of the body)`` of every function, nested ones included.

    The body is counted from its first statement to its end (the signature is not counted);
    nested functions count in their parents too.
    """
    lines = code_lines(source, tree)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, int, int]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    start = child.body[0].lineno
                    yield name, child.lineno, sum(1 for n in lines if start <= n <= child.end_lineno)
                yield from visit(child, name + ".")
            else:
                yield from visit(child, prefix)

    return visit(tree, "")


def test_functions_are_short():
    fail_on([f"{m.rel}:{line}: rule e (function length): {name} has {n} lines of code "
             f"(at most {MAX_FUNCTION_LINES})"
             for m in MODULES.values() for name, line, n in function_lengths(m.source, m.tree)
             if n > MAX_FUNCTION_LINES])


# --------------------------------------------------------------------------- f, g. notebooks
def read_notebooks() -> dict[str, dict]:
    return {p.relative_to(REPO).as_posix(): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(NOTEBOOKS.glob("*.ipynb"))}


def cell_source(cell: dict) -> str:
    """A code cell's text, IPython magics and shell escapes blanked out (kept as empty lines)."""
    text = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in text.split("\n"))


def notebook_cell_violations(notebooks: dict[str, dict]) -> list[str]:
    out = []
    for rel, nb in notebooks.items():
        for index, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            where = f"{rel}: cell {index}"
            try:
                tree = ast.parse(cell_source(cell))
            except SyntaxError as exc:
                out.append(f"{where}, line {exc.lineno}: rule f (notebook cells): the cell does not parse ({exc.msg})")
                continue
            lines = len(code_lines(cell_source(cell), tree))
            if lines > MAX_CELL_LINES:
                out.append(f"{where}: rule f (short notebook cells): {lines} lines of code (at most {MAX_CELL_LINES})")
            for node in sorted(ast.walk(tree), key=lambda n: (getattr(n, "lineno", 0), getattr(n, "col_offset", 0))):
                kind = NOTEBOOK_FORBIDDEN.get(type(node))
                if kind:
                    out.append(f"{where}, line {node.lineno}: rule f (notebook cells define no functions or classes): "
                               f"{kind}; move it into mer_lib")
    return out


def json_line(path: Path, key: str) -> int:
    """Line of the first ``"key":`` in a notebook's JSON text (1 if absent)."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.lstrip().startswith(f'"{key}":'):
            return number
    return 1


def notebook_metadata_violations(notebooks: dict[str, dict]) -> list[str]:
    out = []
    for rel, nb in notebooks.items():
        tagged = [i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", [])]
        if len(tagged) != 1:
            out.append(f"{rel}:{json_line(REPO / rel, 'cells')}: rule g (one parameters cell): "
                       f"{len(tagged)} cells tagged 'parameters' (cells {tagged}), expected exactly 1")
    specs = {rel: json.dumps(nb.get("metadata", {}).get("kernelspec"), sort_keys=True)
             for rel, nb in notebooks.items()}
    common, count = Counter(specs.values()).most_common(1)[0] if specs else (None, 0)
    for rel, spec in specs.items():
        if spec != common:
            out.append(f"{rel}:{json_line(REPO / rel, 'kernelspec')}: rule g (one kernelspec): kernelspec {spec} "
                       f"differs from {common}, the kernelspec of {count} of {len(specs)} notebooks")
    return out


def test_notebook_cells_are_short_and_define_nothing():
    fail_on(notebook_cell_violations(read_notebooks()))


def test_notebooks_have_one_parameters_cell_and_one_kernelspec():
    fail_on(notebook_metadata_violations(read_notebooks()))


# --------------------------------------------------------------------------- the checks see what they should
def test_the_package_and_notebooks_are_found():
    assert {layer(name) for name in MODULES} == set(range(6))
    assert "mer_lib.data.synth.writer" in MODULES and len(read_notebooks()) >= 8


def fake_package(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        (tmp_path / PACKAGE / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / PACKAGE / rel).write_text(text)
    return read_modules(tmp_path)


def test_the_import_rules_catch_violations(tmp_path):
    modules = fake_package(tmp_path, {
        "__init__.py": "",
        "errors.py": "from mer_lib import config\n",
        "config.py": "from mer_lib.errors import MerError\nfrom mer_lib.jobs import run\n",
        "jobs.py": "def run():\n    from . import metrics\n    return metrics._mean\n",
        "metrics.py": "from .data.cache import _helper\n",
        "data/__init__.py": "",
        "data/cache.py": "import mer_lib.models.nets as nets\nfrom ..config import EMOTIONS\n",
        "models/__init__.py": "",
        "models/nets.py": "from mer_lib.data import cache\nfrom mer_lib import __version__\n",
        "extra.py": "",
    })
    assert imports(modules["mer_lib.metrics"], set(modules)).__next__().target == "mer_lib.data.cache"
    layered = "\n".join(layer_violations(modules))
    assert "mer_lib/metrics.py:1: rule a" in layered and "mer_lib/data/cache.py:1: rule a" in layered
    assert "mer_lib/extra.py:1: rule a (import layers): module mer_lib.extra has no layer" in layered
    assert "data/cache.py:2" not in layered and "models/nets.py" not in layered and len(layered.splitlines()) == 3
    base = base_violations(modules)
    assert [v.split(": rule")[0] for v in base] == ["mer_lib/errors.py:1", "mer_lib/config.py:2"]
    assert [v.split(": rule")[0] for v in local_import_violations(modules)] == ["mer_lib/jobs.py:2"]
    private = private_violations(modules)
    assert [v.split(": rule")[0] for v in private] == ["mer_lib/jobs.py:3", "mer_lib/metrics.py:1"]


def test_function_length_counts_code_only():
    source = '''
def f(a,
      b):
    """Docstring.

    More.
    """
    # a comment

    x = """not a
    docstring"""
    def g():
        """Inner docstring."""
        return 1
    return (x,
            g)
'''
    tree = ast.parse(source)
    assert list(function_lengths(source, tree)) == [("f", 2, 6), ("f.g", 12, 1)]


def test_the_notebook_rules_catch_violations(tmp_path):
    cell = {"cell_type": "code", "metadata": {}, "source": ["%matplotlib inline\n", "x = [i for i in range(3)]\n",
                                                           "f = lambda v: v\n", "for i in x:\n", "    pass\n",
                                                           "def g():\n", "    pass\n", "class C:\n", "    pass"]}
    long = {"cell_type": "code", "metadata": {}, "source": "\n".join(f"x{i} = {i}" for i in range(MAX_CELL_LINES + 1))}
    params = {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "profile = 'quick'"}
    notebooks = {"a.ipynb": {"cells": [params, cell, long], "metadata": {"kernelspec": {"name": "python3"}}}}
    # a comprehension, a lambda and a small loop are fine; a def, a class and a long cell are not
    assert [v.split(": rule")[0] for v in notebook_cell_violations(notebooks)] == ["a.ipynb: cell 1, line 6",
                                                                                 "a.ipynb: cell 1, line 8",
                                                                                 "a.ipynb: cell 2"]
    assert notebook_metadata_violations({k: notebooks["a.ipynb"] for k in ("b.ipynb", "c.ipynb")}) == []
