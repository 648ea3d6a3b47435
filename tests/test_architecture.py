"""The layout is the architecture (docs/architecture.md): which top-level folder may import
which, no import circles (module-level imports and imports inside functions alike), and no
source file so long that it holds several concepts."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each folder may import only the folders listed for it (lower layers); the package root
# `chromaflow/` holds the entry points (CLI, demo) and may import everything.
ALLOWED: dict[str, set[str]] = {
    "conf": set(),
    "storage": {"conf"},
    "models": {"conf", "storage"},
    "retrieval": {"conf", "storage", "models"},
    "stages": {"conf", "storage", "models", "retrieval"},
    "training": {"conf", "storage", "models", "retrieval"},
    "tasks": {"conf", "storage", "models", "retrieval", "stages", "training"},
    "flows": {"conf", "storage", "models", "retrieval", "stages", "training", "tasks"},
    "chromaflow": {"conf", "storage", "models", "retrieval", "stages", "training", "tasks", "flows"},
}
MAX_LINES = 450


def source_files(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    """chromaflow.<folder>.<...> for a file of a top-level folder (chromaflow/ is the root)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["chromaflow", *parts[1:]] if parts[0] == "chromaflow" else ["chromaflow", *parts])


def imported_modules(path: Path) -> set[str]:
    """Every chromaflow module a file imports, at any depth (function-level imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("chromaflow")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("chromaflow"):
                found.add(target)
                found |= {f"{target}.{a.name}" for a in node.names}  # `from pkg import module`
    return found


def folder_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "chromaflow"


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for folder in ALLOWED for p in source_files(folder)}


def test_folders_import_only_the_layers_below():
    wrong = []
    for module, path in all_modules().items():
        mine = folder_of(module)
        for target in imported_modules(path):
            other = folder_of(target)
            if other != mine and other not in ALLOWED[mine]:
                wrong.append(f"{path.relative_to(ROOT)} imports {target} ({mine} -> {other})")
    assert not wrong, "\n".join(wrong)


def test_no_import_circles_between_modules():
    modules = all_modules()
    graph = {m: {t for t in imported_modules(p) if t in modules and t != m} for m, p in modules.items()}
    # A package's __init__ re-exporting its modules is not a circle with them.
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            pytest.fail("import circle: " + " -> ".join(cycle))


def test_no_source_file_over_the_size_limit():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for folder in ALLOWED for p in source_files(folder)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES]
    assert not long, "\n".join(long)


def test_the_pool_runs_exactly_the_pooled_stages():
    from chromaflow.stages.registry import SHARD_STAGES
    from chromaflow.stages.workers import POOLED_MODULES

    assert set(POOLED_MODULES) == {name for name, s in SHARD_STAGES.items() if s.on_pool}
