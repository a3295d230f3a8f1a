"""The core is one-way: no import cycles between vtcore modules (function-level imports
included), no Streamlit and no dashboard state in vtcore, no module reaching into another's
private names, and code points at docs inside the repository."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "vtcore"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(CORE.rglob("*.py"))}


def imports(tree: ast.Module, known: set[str]) -> set[str]:
    """Every vtcore module a module imports, at any depth of its code."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "vtcore"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vtcore":
            out.add(node.module)
            # `from vtcore import models` imports the module vtcore.models
            out |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return {m for m in out if m in known}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a module importing itself."""
    index, low, stack, on, found, n = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_vtcore():
    mods = modules()
    graph = {name: imports(tree, set(mods)) - {"vtcore"} for name, tree in mods.items()}
    assert cycles(graph) == []


def test_no_streamlit_or_dashboard_in_vtcore():
    for name, tree in modules().items():
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                assert n.split(".")[0] not in ("streamlit", "vtapp"), f"{name} imports {n}"
    assert not (CORE / "state.py").exists(), "the dashboard's state lives in vtapp/"


def test_no_module_uses_another_modules_private_names():
    mods = modules()
    for name, tree in mods.items():
        aliases = {}   # local name -> vtcore module it stands for
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vtcore"):
                for a in node.names:
                    assert not a.name.startswith("_") or a.name == "__version__", \
                        f"{name} imports private {node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in mods:
                        aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("vtcore") and a.asname:
                        aliases[a.asname] = a.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                raise AssertionError(f"{name} uses private {aliases[node.value.id]}.{node.attr}")


def test_code_cites_docs_inside_the_repository():
    for path in list(CORE.rglob("*.py")) + list((ROOT / "vtapp").rglob("*.py")) + list((ROOT / "pages").glob("*.py")):
        text = path.read_text()
        assert "DESIGN.md" not in text, f"{path} cites DESIGN.md, which is not in the repository"
    assert (ROOT / "docs" / "design.md").is_file()
