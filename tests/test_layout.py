"""The import graph of the project: no circle, and no import against the data flow.

Layers, bottom to top; a module imports only from lower layers or from its own unit:

    common, configs -> data -> sim -> recon.nn -> recon.losses -> recon.models
        -> recon.train | recon.estimators | recon.digits -> recon.refine
        -> recon.reconstructor | recon.evaluation -> recon.cli

Every import counts, the lazy ones inside functions too: a circle that only closes at
run time is still a circle. The graph is read from the source with `ast`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "configs", "data", "sim", "recon")
LAYERS: dict[str, int] = {
    "common": 0,
    "configs": 0,
    "data": 1,
    "sim": 2,
    "recon.nn": 3,
    "recon.losses": 4,
    "recon.models": 5,
    "recon.train": 6,
    "recon.estimators": 6,
    "recon.digits": 6,
    "recon.refine": 7,
    "recon.reconstructor": 8,
    "recon.evaluation": 8,
    "recon.cli": 9,
    "recon": 10,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(p): p
        for pkg in PACKAGES
        for p in sorted((ROOT / pkg).rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def _imports(path: Path, known: set[str]) -> set[str]:
    """Project modules that `path` imports anywhere (a name imported from a package is
    the submodule when one of that name exists, else the package itself)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                for a in node.names
            ]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, known) - {name} for name, path in modules.items()}


def _unit(module: str) -> str:
    """The layer unit of a module: the longest key of LAYERS that prefixes it."""
    for key in sorted(LAYERS, key=len, reverse=True):
        if module == key or module.startswith(key + "."):
            return key
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS")


def _against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        unit = _unit(module)
        for target in targets:
            other = _unit(target)
            if other != unit and LAYERS[other] >= LAYERS[unit]:
                bad.append(f"{module} ({unit}) imports {target} ({other})")
    return sorted(bad)


def _circles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []
    found: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:  # a circle, written from its first module by name
                ring = stack[stack.index(nxt) :]
                first = ring.index(min(ring))
                ring = ring[first:] + ring[:first]
                found.append(" -> ".join([*ring, ring[0]]))
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _unit(module)


def test_no_import_runs_against_the_data_flow() -> None:
    assert not (bad := _against_the_flow(_graph())), "\n".join(bad)


def test_no_import_circle() -> None:
    assert not (found := _circles(_graph())), "\n".join(found)


def test_the_checks_catch_the_old_layouts_faults() -> None:
    """Both checks can fail: the edges of main before the restructuring are caught."""
    graph = _graph()
    graph["data.lab"] = {*graph["data.lab"], "sim.pupil"}  # data borrowed from sim
    assert _against_the_flow(graph) == ["data.lab (data) imports sim.pupil (sim)"]
    graph = _graph()  # a registry base importing back the baselines that register in it
    graph["recon.estimators.base"] = {*graph["recon.estimators.base"], "recon.estimators.analytic"}
    assert _circles(graph) == [
        "recon.estimators.analytic -> recon.estimators.base -> recon.estimators.analytic"
    ]


def _project_text_files() -> list[Path]:
    files = [p for pkg in (*PACKAGES, "scripts") for p in (ROOT / pkg).rglob("*")]
    return [
        p for p in files if p.suffix in (".py", ".yaml", ".sh") and "__pycache__" not in p.parts
    ]


def test_code_points_at_no_document_outside_the_repository() -> None:
    """Code, configs and scripts cite only what the repository holds: no design notes,
    style items or issue numbers of the developers' tracker, and every docs/ page they
    name exists."""
    import re

    outside = re.compile(r"DESIGN\.md|DESIGN \"|STYLE item|\bissue \d+|\(issue\b|the issue's")
    pages = re.compile(r"docs/[\w./-]+\.md")
    bad = []
    for path in _project_text_files():
        text = path.read_text()
        bad += [f"{path.relative_to(ROOT)}: {m.group()}" for m in outside.finditer(text)]
        bad += [
            f"{path.relative_to(ROOT)}: {m.group()} does not exist"
            for m in pages.finditer(text)
            if not (ROOT / m.group()).is_file()
        ]
    assert not bad, "\n".join(bad)


def test_no_recon_module_over_400_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "recon").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert not long, long
