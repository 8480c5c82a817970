"""The package's import layers, read from the source (``ast``): no import circle, no import up a layer.

``LAYERS`` is the architecture, lowest first; a module belongs to the longest prefix listed. A module
may import from its own layer (without a circle) or from any layer below, never from one above. Every
import counts, a function's lazy one included, and so do the subcommand modules that ``syre.app.cli``
names as strings. A new module must be placed here on purpose (an unplaced one fails).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

import pytest

from syre._paths import KEPT

SRC = Path(__file__).resolve().parents[2] / "src"

LAYERS: List[List[str]] = [
    # 0. base: no syre import below them but each other
    ["syre._version", "syre._validate", "syre._compile", "syre._dist", "syre._live", "syre._paths", "syre.select"],
    # 1. the request: sigma0 rules and the validated configuration
    ["syre.sigma0", "syre.config"],
    # 2. the generator (face: syre.rng.anchors, syre.rng.jax)
    ["syre.rng"],
    # 3. the decay kernels and the fused optimizers
    ["syre.kernels"],
    # 4. the anchor's other forms and the initial weights
    ["syre.forms"],
    # 5. the step machinery (Syre, MultiSyre)
    ["syre.core"],
    # 6. the attachment that needs DeepSpeed (ZeroSyre)
    ["syre.integrations._optional", "syre.integrations._deepspeed_checks", "syre.integrations.deepspeed"],
    # 7. syre.attach: picks Syre, MultiSyre or ZeroSyre
    ["syre._attach"],
    # 8. what builds on attach or on the anchors: frameworks, JAX, diagnostics, the test oracle
    ["syre.integrations", "syre.optax", "syre._optax_config", "syre.diagnostics", "syre.reference"],
    # 9. the applications
    ["syre.app"],
    # 10. the benchmark suite
    ["syre.bench"],
    # 11. the ``syre`` command, over every subcommand (bench's included)
    ["syre.app.cli"],
    # 12. the public names
    ["syre"],
]

#: Modules that use the public face as a user does (``import syre``, ``from syre.data import ...``): bench.
ROOT_CLIENTS = ("syre.bench",)

#: Circles known and left to their owner (each must still exist: remove it here once it is gone).
KNOWN_CIRCLES: set = set()

#: Subpackages whose ``__init__`` imports nothing, so importing one of their modules loads no other layer.
BARE_PACKAGES = ("syre.rng", "syre.kernels", "syre.forms", "syre.core", "syre.app")


def _modules() -> Dict[str, Path]:
    out = {}
    for p in sorted((SRC / "syre").rglob("*.py")):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES[mod].name == "__init__.py"


def _resolve(name: str) -> str:
    return KEPT.get(name, name)


def written_imports(mod: str) -> Set[str]:
    """The syre modules ``mod`` names in its imports, as written (a kept path as such)."""
    tree = ast.parse(MODULES[mod].read_text())
    pkg = mod if _is_package(mod) else mod.rsplit(".", 1)[0]
    out: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "syre")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "syre":
                target = node.module
            else:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.add(sub if _resolve(sub) in MODULES else target)
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "COMMAND_MODULES" for t in node.targets):
            out.update(c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant))
    out.discard(mod)
    return out


def imports(mod: str) -> Set[str]:
    """The syre modules ``mod`` imports, at their homes (each ``from pkg import sub`` of a submodule names it)."""
    return {_resolve(m) for m in written_imports(mod)} - {mod}


def layer(mod: str) -> int:
    best, found = -1, None
    for i, prefixes in enumerate(LAYERS):
        for pre in prefixes:
            if (mod == pre or mod.startswith(pre + ".")) and len(pre) > best:
                best, found = len(pre), i
    assert found is not None, f"{mod} is in no layer: place it in LAYERS (tests/test_layers.py)"
    return found


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_is_placed_and_every_import_resolves():
    for mod, deps in GRAPH.items():
        layer(mod)
        unknown = [d for d in deps if d not in MODULES]
        assert not unknown, f"{mod} imports {unknown}, which are not modules of syre"


def test_no_import_runs_up_a_layer():
    upward = []
    for mod, deps in GRAPH.items():
        for d in deps:
            if d == "syre" and mod.startswith(ROOT_CLIENTS):
                continue
            if layer(d) > layer(mod):
                upward.append(f"{mod} (layer {layer(mod)}) imports {d} (layer {layer(d)})")
    assert not upward, "imports up a layer:\n" + "\n".join(sorted(upward))


def test_no_import_circle():
    state: Dict[str, int] = {}
    stack: List[str] = []
    circles: List[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if d == "syre":  # the public face; its clients are checked above
                continue
            if state.get(d) == 1:
                circles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
    found = {frozenset(c.split(" -> ")) for c in circles}
    assert not found - KNOWN_CIRCLES, "import circles:\n" + "\n".join(circles)
    assert not KNOWN_CIRCLES - found, f"gone (remove from KNOWN_CIRCLES): {KNOWN_CIRCLES - found}"


def test_library_code_imports_new_paths_and_not_the_oracle():
    """The kept paths are for users; inside syre each import names the module's home. The oracle is for tests."""
    for mod in MODULES:
        if mod.startswith(ROOT_CLIENTS):
            continue
        kept = sorted(m for m in written_imports(mod) if m in KEPT)
        assert not kept, f"{mod} imports {kept} by their kept paths; use {[KEPT[m] for m in kept]}"
        if mod != "syre.reference":
            assert "syre.reference" not in GRAPH[mod], f"{mod} imports the test oracle syre.reference"


@pytest.mark.parametrize("pkg", BARE_PACKAGES)
def test_subpackage_inits_import_nothing(pkg):
    assert not GRAPH[pkg], f"{pkg}/__init__.py imports {sorted(GRAPH[pkg])}"


def test_the_layers_are_what_this_test_reads():
    """The checks above can fail: an upward import and a circle are found in a made-up graph."""
    assert layer("syre.rng._format2") == 2 and layer("syre.app.cli") == 11 and layer("syre.app.demo") == 9
    assert layer("syre.integrations.deepspeed") < layer("syre._attach") < layer("syre.integrations.lightning")
    assert "syre.bench.cli" in GRAPH["syre.app.cli"] and "syre.app.demo" in GRAPH["syre.app.cli"]
    assert "syre.rng._triton" in GRAPH["syre.kernels._triton"] and "syre._live" in GRAPH["syre.kernels.fused"]
