"""The folders are the layers: which folder may import which, checked on the source.

Every import counts: top-level, inside functions and under ``TYPE_CHECKING``,
because each is a dependency a reader has to follow. The pure folders import no
I/O library at all, and the whole package has no import circle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "rtgate"

# The unit of a rule is the first component under rtgate/ (a folder or a loose module).
PURE = frozenset(
    {"wire", "errors", "config", "protocol", "translate", "mockmodel", "pool", "spend"}
)
"""Plain functions and data: no sockets, no clock, no event loop."""

MAY_IMPORT: dict[str, frozenset[str]] = {
    "wire": frozenset(),
    "errors": frozenset(),
    "protocol": frozenset({"errors", "wire"}),
    "config": frozenset({"errors", "wire"}),
    "pool": frozenset({"config", "errors", "wire"}),
    "translate": frozenset({"protocol", "config", "errors", "wire"}),
    "mockmodel": frozenset({"translate", "protocol", "config", "errors", "wire"}),
    "spend": frozenset({"errors"}),
    "governance": frozenset({"spend", "config", "errors", "wire"}),
    "net": frozenset({"config", "errors", "wire"}),
    "aws": frozenset({"net", "config", "errors", "wire"}),
    "telemetry": frozenset({"protocol", "config", "errors", "wire", "__init__"}),
    "providers": frozenset(
        {"net", "aws", "translate", "mockmodel", "protocol", "config", "errors", "wire"}
    ),
    "shared": frozenset({"pool", "config", "errors", "wire"}),
    "session": frozenset(
        {
            "shared",
            "governance",
            "spend",
            "providers",
            "telemetry",
            "net",
            "pool",
            "protocol",
            "translate",
            "config",
            "errors",
            "wire",
        }
    ),
    "control": frozenset(
        {
            "session",
            "shared",
            "governance",
            "spend",
            "telemetry",
            "pool",
            "config",
            "errors",
            "wire",
            "__init__",
        }
    ),
    "webrtc": frozenset({"session", "net", "translate", "config", "errors", "wire"}),
    "edge": frozenset(
        {
            "webrtc",
            "control",
            "session",
            "providers",
            "telemetry",
            "net",
            "pool",
            "config",
            "errors",
            "wire",
            "shared",
        }
    ),
    "testing": frozenset(
        {
            "edge",
            "webrtc",
            "telemetry",
            "providers",
            "aws",
            "translate",
            "mockmodel",
            "protocol",
            "config",
            "errors",
            "wire",
        }
    ),
    "cli": frozenset({"edge", "governance", "spend", "config", "errors", "__init__"}),
    "__main__": frozenset({"cli"}),
    "__init__": frozenset(),
}
"""Each unit and the units it may import (a unit may always import itself)."""

IO_LIBRARIES = frozenset(
    {
        "trio",
        "trio_websocket",
        "hypercorn",
        "websockets",
        "h11",
        "h2",
        "socket",
        "ssl",
        "select",
        "selectors",
        "asyncio",
        "anyio",
        "subprocess",
        "sqlite3",
        "psycopg",
        "coredis",
        "redis",
        "httpx",
        "aiortc",
    }
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module ``path`` imports, absolute, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            # ``from rtgate.x import y`` may name a submodule y: count it too.
            for alias in node.names:
                yield node.lineno, f"{module}.{alias.name}"


def _unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "rtgate":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _known_modules() -> set[str]:
    return {_module_name(p) for p in _sources()}


def test_every_unit_has_a_rule() -> None:
    units = {_unit(_module_name(p)) for p in _sources()}
    assert units <= set(MAY_IMPORT), f"no layer rule for {sorted(units - set(MAY_IMPORT))}"


def test_folders_import_only_the_layers_below_them() -> None:
    known = _known_modules()
    broken: set[str] = set()
    for path in _sources():
        own = _unit(_module_name(path))
        assert own is not None
        for line, module in _imports(path):
            target = _unit(module)
            if target is None or target == own:
                continue
            if module not in known and module.rsplit(".", 1)[0] in known:
                module = module.rsplit(".", 1)[0]  # an imported name, not a submodule
                target = _unit(module)
            if target is None or target == own or target in MAY_IMPORT[own]:
                continue
            broken.add(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {module}")
    assert not broken, "layer rule broken:\n" + "\n".join(sorted(broken))


def test_pure_folders_import_no_io_library() -> None:
    broken = []
    for path in _sources():
        if _unit(_module_name(path)) not in PURE:
            continue
        for line, module in _imports(path):
            if module.split(".")[0] in IO_LIBRARIES:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line}: imports {module}")
    assert not broken, "pure code imports I/O:\n" + "\n".join(broken)


def _graph() -> dict[str, set[str]]:
    known = _known_modules()
    graph: dict[str, set[str]] = {}
    for path in _sources():
        name = _module_name(path)
        edges = graph.setdefault(name, set())
        for _, module in _imports(path):
            if module in known and module != name:
                edges.add(module)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    # A package's __init__ importing its own submodules is not a circle a reader follows.
    graph = {
        name: {m for m in edges if not (name.startswith(m + ".") and m in edges)}
        for name, edges in _graph().items()
    }
    assert _cycles(graph) == []


@pytest.mark.parametrize("unit", sorted(PURE))
def test_pure_folders_load_no_io_module(unit: str) -> None:
    # A fresh interpreter: importing every module of a pure folder loads no I/O library.
    modules = sorted(_module_name(p) for p in _sources() if _unit(_module_name(p)) == unit)
    code = (
        "import sys\n"
        f"for name in {modules!r}: __import__(name)\n"
        f"io = {sorted(IO_LIBRARIES)!r}\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.split('.')[0] in io)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "", f"{unit} loaded I/O modules:\n{result.stdout}"
