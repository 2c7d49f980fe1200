"""The worker package has no import circle: each module's dependencies point one way.

Every `import` of a worker module counts, also one inside a function (a lazy import that only hides
a circle is still one); an import under `if TYPE_CHECKING:` does not, since it never runs. A module
inside a subpackage also depends on that package's `__init__`, which Python runs first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

WORKER = Path(__file__).resolve().parents[1] / "worker"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _typing_only(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _typing_only(node):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the worker modules it imports, for every .py file under `root`."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        edges = graph[name]
        if "." in name and (package := name.rsplit(".", 1)[0]) in files and path.name != "__init__.py":
            edges.add(package)
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:  # `from worker import gate` names a module; `from worker.x import f` names x
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""  # `from ..x`: up one
                module = ".".join(p for p in (base, node.module or "") if p)
                named = [f"{module}.{alias.name}" for alias in node.names]
                targets = [t for t in named if t in files] or [module]
            edges.update(t for t in targets if t in files and t != name)
    return graph


def circle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle as [a, b, ..., a], or [] when the graph has none."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_the_worker_package_has_no_import_circle():
    graph = import_graph(WORKER)
    assert len(graph) > 30 and graph["worker.loop"]  # the walk found the package and its imports
    assert circle(graph) == []


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root / "worker"


def test_the_check_finds_the_old_prompt_and_providers_circle(tmp_path):
    # The layout before AgentSpec moved into prompt.py: the provider package's `get_provider` loads
    # claude.py lazily, claude.py imports prompt.compose, prompt.py imports AgentSpec from the package.
    root = write(
        tmp_path,
        {
            "worker/__init__.py": "",
            "worker/prompt.py": "from worker.providers import AgentSpec\n",
            "worker/providers/__init__.py": "def get():\n    from worker.providers.claude import C\n",
            "worker/providers/claude.py": "from worker.prompt import compose\n",
        },
    )
    assert circle(import_graph(root)) == [
        "worker.prompt",
        "worker.providers",
        "worker.providers.claude",
        "worker.prompt",
    ]


@pytest.mark.parametrize(
    ("source", "counted"),
    [
        ("import worker.b\n", True),
        ("from worker import b\n", True),
        ("from . import b\n", True),
        ("from .b import thing\n", True),
        ("from worker.b import thing\n", True),
        ("def f():\n    from worker.b import thing\n", True),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker.b import thing\n", False),
    ],
)
def test_an_import_counts_unless_it_is_for_type_checking_only(tmp_path, source, counted):
    files = {"worker/__init__.py": "", "worker/a.py": source, "worker/b.py": "import worker.a\n"}
    root = write(tmp_path, files)
    assert bool(circle(import_graph(root))) is counted
