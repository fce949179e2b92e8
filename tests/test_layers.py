"""The layers import downward only: no import cycle among fastxent's modules (issue 11)."""

import ast
import pathlib

import fastxent

ROOT = pathlib.Path(fastxent.__file__).parent


def _module_name(path):
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph():
    """Module -> the fastxent modules it imports at module level (function-level imports
    are deliberate late imports: optional integrations, the command line)."""
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.startswith("fastxent"):
                    deps.add(target)
                    deps.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("fastxent"))
        graph[name] = deps
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_no_import_cycles():
    graph = _graph()
    assert "fastxent._engine" in graph and "fastxent._boundary" in graph["fastxent.losses"]
    state = {}

    def visit(m, stack):
        if state.get(m) == "done":
            return
        assert state.get(m) != "open", " -> ".join(stack + [m])
        state[m] = "open"
        for d in sorted(graph[m]):
            # a package's __init__ importing its own submodules is not a cycle
            if not m.startswith(d + ".") and not d.startswith(m + "."):
                visit(d, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


def test_the_engine_never_imports_the_public_layer():
    graph = _graph()
    for low in ("fastxent._engine", "fastxent._boundary", "fastxent._plan"):
        assert not graph[low] & {"fastxent.losses", "fastxent.keras", "fastxent.linear"}, low
