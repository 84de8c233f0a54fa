"""The unetflow source a stage script runs, derived from its imports (the re-run contract)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "unetflow"


def _module_files(src: Path, module: str) -> list[Path]:
    """The files Python executes to import `module`: every package __init__ on its path and
    the module itself (a file, or a package's __init__); [] where it is not one of ours."""
    parts = module.split(".")
    files = []
    for depth in range(1, len(parts) + 1):
        base = src.joinpath(*parts[:depth])
        if (base / "__init__.py").is_file():
            files.append(base / "__init__.py")
        elif base.with_suffix(".py").is_file() and depth == len(parts):
            files.append(base.with_suffix(".py"))
        else:
            return files if depth > 1 else []
    return files


def _imported(path: Path) -> set[str]:
    """Every module named by an import statement in `path`, at any depth (function-level
    imports run too), including `from package import module` forms."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def code_closure(script: Path, src: Path) -> set[Path]:
    """The files of `src`/unetflow that running `script` imports, transitively."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imported(todo.pop()):
            for file in _module_files(src, module):
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen
