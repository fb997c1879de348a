"""Extension packaging: CMake lists every file, the .ui has every widget the module uses, icons are right."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from PIL import Image as PILImage

from conftest import MODULE_DIR, REPO


def _cmake_list(name: str) -> set[str]:
    text = (MODULE_DIR / "CMakeLists.txt").read_text()
    block = re.search(rf"set\({name}\n(.*?)\n\s*\)", text, re.S).group(1)
    return {line.strip().replace("${MODULE_NAME}", "BreastCADx") for line in block.splitlines() if line.strip()}


def test_cmake_lists_every_python_file():
    tree = {p.relative_to(MODULE_DIR).as_posix() for p in MODULE_DIR.rglob("*.py")
            if "Testing" not in p.parts and "__pycache__" not in p.parts}
    assert _cmake_list("MODULE_PYTHON_SCRIPTS") == tree


def test_cmake_lists_every_resource():
    res = MODULE_DIR / "Resources"
    tree = {p.relative_to(MODULE_DIR).as_posix() for p in res.rglob("*") if p.is_file()}
    assert _cmake_list("MODULE_PYTHON_RESOURCES") == tree


def test_top_level_cmake_metadata():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "find_package(Slicer REQUIRED)",
                "add_subdirectory(BreastCADx)", "Slicer_EXTENSION_GENERATE_CONFIG", "Slicer_EXTENSION_CPACK"):
        assert key in text


def test_icon_is_128_square():
    for path in (REPO / "BreastCADx.png", MODULE_DIR / "Resources/Icons/BreastCADx.png"):
        assert PILImage.open(path).size == (128, 128)


def test_every_widget_used_exists_in_ui():
    ui = ET.parse(MODULE_DIR / "Resources/UI/BreastCADx.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (MODULE_DIR / "BreastCADx.py").read_text()))
    assert used, "the module uses no widget: the check would be empty"
    assert used <= names, f"widgets missing from the .ui: {sorted(used - names)}"


def test_library_imports_no_slicer_or_qt():
    for path in (MODULE_DIR / "BreastCADxLib").rglob("*.py"):
        if path.name == "mrml.py":  # the MRML bridge imports slicer inside its functions
            continue
        text = path.read_text()
        assert not re.search(r"^\s*(import|from)\s+(slicer|qt|ctk)\b", text, re.M), path
