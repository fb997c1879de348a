"""The layer rule of BreastCADxLib (its package docstring), checked on every import statement of the library."""

import ast
from pathlib import Path

import pytest

LIB = Path(__file__).resolve().parents[2] / "BreastCADxLib"
# low to high; core types (errors, image) below all
LAYERS = ("io", "analysis", "results", "train", "scene", "web", "cli")
GUI = ("slicer", "qt", "ctk", "vtk", "mrml", "trame", "trame_slicer")  # only scene/ and web/ may import these
GUI_LAYERS = ("scene", "web")
FILES = sorted(LIB.rglob("*.py"))


def layer_of(path: Path) -> str:
    rel = path.relative_to(LIB).parts
    return rel[0] if len(rel) > 1 else "core"


def violations(layer: str, source: str) -> list[str]:
    """Imports of `source` (a module in `layer`) that break the rule."""
    rank = -1 if layer == "core" else LAYERS.index(layer)
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            out.append(f"relative import from {'.' * node.level}{node.module or ''}")
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        for name in names:
            parts = name.split(".")
            if parts[0] == "BreastCADxLib" and len(parts) > 1 and parts[1] in LAYERS \
                    and LAYERS.index(parts[1]) > rank:
                out.append(f"{name} is above {layer}")
            if parts[0] in GUI and layer not in GUI_LAYERS:
                out.append(f"{name} outside scene/ and web/")
    return out


def test_every_module_is_in_a_layer():
    assert {layer_of(p) for p in FILES} == {"core", *LAYERS}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(LIB)))
def test_imports_follow_the_layers(path):
    assert violations(layer_of(path), path.read_text()) == []


def test_the_check_finds_each_kind_of_violation():
    src = ("from BreastCADxLib.scene.logic import WorkflowLogic\nimport slicer\nfrom . import image\n"
           "def f():\n    from BreastCADxLib.results.overlay import overlay_rgb\n")
    assert len(violations("analysis", src)) == 4
    assert violations("scene", "import slicer\nfrom BreastCADxLib.analysis.pipeline import analyze\n") == []
    assert violations("web", "import trame\nfrom BreastCADxLib.scene.logic import WorkflowLogic\n") == []
    assert len(violations("scene", "from BreastCADxLib.web.page import serve\n")) == 1
