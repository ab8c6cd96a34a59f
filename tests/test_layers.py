"""The layers hold: imports only point down, and no two modules import each other (directly or
round a loop). Read from the source with ``ast``, lazy imports inside functions included, so a
back-edge hidden in a function body fails here too.

Layers, from the ground up (docs/architecture.md):

1. ``shared``: the protocol both sides agree on; imports nothing of the project.
2. ``device`` and ``cloud`` side by side; neither imports the other, except that the cloud's
   release check and release registry may use the device's engine and shipped model as a library
   (``cloud.regression``, ``cloud.releases``, ``cloud.retrain``).
3. ``firmware_sim``: simulated devices (they speak the protocol: ``shared`` only).
4. ``fleet_sim``: fleets and owners running real agents and a real cloud.
5. ``edgeloop``: the application (CLI, demo, reports, evaluation harness).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "device", "cloud", "firmware_sim", "fleet_sim", "edgeloop")

#: package -> the project packages it may import
ALLOWED: dict[str, set[str]] = {
    "shared": set(),
    "device": {"shared"},
    "cloud": {"shared", "device"},  # device only from CLOUD_MAY_USE_DEVICE, checked below
    "firmware_sim": {"shared"},
    "fleet_sim": {"shared", "device", "cloud", "firmware_sim"},
    "edgeloop": {"shared", "device", "cloud", "firmware_sim", "fleet_sim"},
}
#: the cloud modules that may replay the device's engine or read its shipped model, as a library
CLOUD_MAY_USE_DEVICE = ("cloud.regression", "cloud.releases", "cloud.retrain")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            mods[module_name(path)] = path
    return mods


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """Project modules imported anywhere in ``path`` (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        for t in targets:
            # the deepest known module the name refers to (``from pkg import mod`` names a module)
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t.split(".")[0] in PACKAGES and t != name:
                found.add(t)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = project_modules()
    known = set(mods)
    return {name: imports_of(path, name, known) for name, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        src_pkg = src.split(".")[0]
        for dst in sorted(targets):
            dst_pkg = dst.split(".")[0]
            if dst_pkg == src_pkg:
                continue
            if dst_pkg not in ALLOWED[src_pkg]:
                bad.append(f"{src} -> {dst}")
            elif src_pkg == "cloud" and dst_pkg == "device" and not src.startswith(CLOUD_MAY_USE_DEVICE):
                bad.append(f"{src} -> {dst} (only {', '.join(CLOUD_MAY_USE_DEVICE)} may use the device)")
    return bad


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    pkg_graph: dict[str, set[str]] = defaultdict(set)
    for src, targets in graph.items():
        for dst in targets:
            if src.split(".")[0] != dst.split(".")[0]:
                pkg_graph[src.split(".")[0]].add(dst.split(".")[0])
    return find_cycles(pkg_graph)


def test_imports_only_point_down() -> None:
    assert layer_violations(import_graph()) == []


def test_no_package_cycles() -> None:
    assert package_cycles(import_graph()) == []


def test_no_module_cycles() -> None:
    assert find_cycles(import_graph()) == []


def test_the_graph_is_read() -> None:
    """The checks above look at a real graph: known edges are found."""
    g = import_graph()
    assert "shared.frames" in g["device.agent"]
    assert "device.agent" in g["fleet_sim.devices"]
    assert any(t.startswith("cloud.") for t in g["edgeloop.cli"])  # lazy imports in functions


@pytest.mark.parametrize(
    ("graph", "expect"),
    [
        ({"shared.cli": {"device.agent"}, "device.agent": set()}, ["shared.cli -> device.agent"]),
        ({"device.x": {"firmware_sim.motion"}, "firmware_sim.motion": set()},
         ["device.x -> firmware_sim.motion"]),
        ({"cloud.run": {"device.inference.classifier"}, "device.inference.classifier": set()},
         ["cloud.run -> device.inference.classifier (only cloud.regression, cloud.releases, "
          "cloud.retrain may use the device)"]),
        ({"cloud.regression.replay": {"device.detect.engine"}, "device.detect.engine": set()}, []),
        ({"firmware_sim.collar": {"shared.frames"}, "shared.frames": set()}, []),
    ],
)
def test_layer_rules_catch_back_edges(graph: dict[str, set[str]], expect: list[str]) -> None:
    """The checker itself: each of the back-edges this repo once had is reported."""
    assert layer_violations(graph) == expect


def test_cycle_finder_finds_a_loop() -> None:
    graph = {"edgeloop.cli": {"edgeloop.demo"}, "edgeloop.demo": {"edgeloop.cli"}, "x.y": set()}
    assert find_cycles(graph) == [["edgeloop.cli", "edgeloop.demo"]]
    assert package_cycles({"shared.a": {"device.b"}, "device.b": {"shared.a"}}) == [["device", "shared"]]
