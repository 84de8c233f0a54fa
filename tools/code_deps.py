"""The unetflow source a stage script runs, derived from its imports (the re-run contract).

python tools/code_deps.py   # rewrite dvc.yaml's src/ deps to what each script imports
"""

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
    """The files of `src`/unetflow that running `script` imports, transitively, with the data
    files (``*.yaml``) of the packages it imports from, which that code reads."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for module in _imported(todo.pop()):
            for file in _module_files(src, module):
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen | {data for file in seen for data in file.parent.glob("*.yaml")}


def _declared_block(lines: list[str], start: int) -> tuple[int, int]:
    """The span of `      - src/unetflow/...` lines that follows line `start`."""
    end = start + 1
    while end < len(lines) and lines[end].strip().startswith("- src/unetflow/"):
        end += 1
    return start + 1, end


def write_dvc_yaml(root: Path) -> list[str]:
    """Rewrite each stage's src/ deps in `root`/dvc.yaml to what its script imports (comments
    and the order of everything else kept); returns the stages whose list changed."""
    path = root / "dvc.yaml"
    lines = path.read_text().splitlines(keepends=True)
    changed = []
    for i in reversed(range(len(lines))):
        line = lines[i]
        if not line.strip().startswith("- scripts/") or not line.strip().endswith(".py"):
            continue
        script = root / line.strip()[2:]
        indent = line[: len(line) - len(line.lstrip())]
        files = sorted(str(f.relative_to(root)) for f in code_closure(script, root / "src"))
        block = [f"{indent}- {name}\n" for name in files]
        first, end = _declared_block(lines, i)
        if lines[first:end] != block:
            lines[first:end] = block
            changed.append(script.stem)
    path.write_text("".join(lines))
    return sorted(changed)


if __name__ == "__main__":
    import sys

    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print("rewrote the code deps of:", ", ".join(write_dvc_yaml(root)) or "none")
