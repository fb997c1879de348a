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


def test_screenshot_urls_are_the_committed_pictures_of_the_page():
    text = (REPO / "CMakeLists.txt").read_text()
    urls = re.search(r'EXTENSION_SCREENSHOTURLS "([^"]*)"', text).group(1).split()
    icon = re.search(r'EXTENSION_ICONURL "([^"]*)"', text).group(1)
    raw = icon.removesuffix("BreastCADx.png")  # https://raw.githubusercontent.com/<owner>/<repo>/main/
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith(raw)
        picture = PILImage.open(REPO / url.removeprefix(raw))
        assert picture.size[0] >= 800 and picture.size[1] >= 600
        assert url.removeprefix(raw) in (REPO / "README.md").read_text()  # shown in the README too


def test_icon_is_128_square():
    for path in (REPO / "BreastCADx.png", MODULE_DIR / "Resources/Icons/BreastCADx.png"):
        assert PILImage.open(path).size == (128, 128)


PANEL = MODULE_DIR / "BreastCADxLib" / "scene" / "widget.py"
SELFTEST = MODULE_DIR / "BreastCADxLib" / "scene" / "selftest.py"


def test_module_file_stays_thin():
    assert len((MODULE_DIR / "BreastCADx.py").read_bytes()) <= 6500  # the panel and the installer are in the Lib


def test_every_widget_used_exists_in_ui():
    ui = ET.parse(MODULE_DIR / "Resources/UI/BreastCADx.ui")
    names = {w.get("name") for w in ui.iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", PANEL.read_text()))
    assert used, "the module uses no widget: the check would be empty"
    assert used <= names, f"widgets missing from the .ui: {sorted(used - names)}"


def _module_ast():
    import ast

    return ast.parse((MODULE_DIR / "BreastCADx.py").read_text())


def test_module_has_the_four_scripted_classes():
    import ast

    classes = {n.name for n in _module_ast().body if isinstance(n, ast.ClassDef)}
    assert {"BreastCADx", "BreastCADxWidget", "BreastCADxLogic", "BreastCADxTest"} <= classes


def test_parameter_node_wrapper_matches_library_state_and_ui():
    import ast

    from BreastCADxLib.scene import parameters as state

    wrapper = next(n for n in _module_ast().body if isinstance(n, ast.ClassDef)
                   and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in n.decorator_list))
    fields = {s.target.id: ast.unparse(s.annotation) for s in wrapper.body if isinstance(s, ast.AnnAssign)}
    assert set(fields) == set(state.NODE_PARAMETERS) | set(state.VALUE_PARAMETERS)
    for name, cls in state.NODE_PARAMETERS.items():
        assert fields[name] == cls, name
    ui = ET.parse(MODULE_DIR / "Resources/UI/BreastCADx.ui")
    linked = {p.find("string").text for p in ui.iter("property") if p.get("name") == "SlicerParameterName"}
    assert linked and linked <= set(fields)


def test_widget_calls_only_existing_workflow_methods():
    from BreastCADxLib.scene.logic import WorkflowLogic

    called = set(re.findall(r"workflow\.(\w+)\(", PANEL.read_text() + SELFTEST.read_text()))
    assert called and all(hasattr(WorkflowLogic, name) for name in called), called


def test_missing_requirements(tmp_path):
    from BreastCADxLib.scene.installer import missing_requirements, read_requirements

    req = tmp_path / "requirements.txt"
    req.write_text("# comment\nnumpy>=1.0\nnumpy<1.0  # too old a pin\nno-such-package-breastcadx==1.0\n")
    assert missing_requirements(read_requirements(req)) == ["numpy<1.0", "no-such-package-breastcadx==1.0"]
    shipped = read_requirements(MODULE_DIR / "Resources" / "requirements.txt")
    assert shipped and missing_requirements(shipped) == []  # the test install satisfies what Slicer installs
    assert not (MODULE_DIR / "Resources" / "requirements-nodeps.txt").exists()  # nothing installed --no-deps


def test_extensions_index_entry():
    import json

    entry = json.loads((REPO / "BreastCADx.json").read_text())
    # catalog-entry schema v1.0.2: required keys, no others (additionalProperties is false)
    allowed = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
               "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= allowed
    assert "catalog-entry-schema-v1.0.2" in entry["$schema"]
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake
    for dep in entry["build_dependencies"]:
        assert re.search(rf"set\(EXTENSION_DEPENDS [^)]*\b{dep}\b", cmake), dep
    assert 1 <= entry["tier"] <= 5


def test_repository_stays_small():
    import subprocess

    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout.split("\0")
    total = sum((REPO / f).stat().st_size for f in files if f and (REPO / f).is_file())
    assert total < 100 * 2**20, f"tracked files total {total / 2**20:.1f} MB"


def test_terminology_file_has_the_codes_segments_carry():
    import json

    from BreastCADxLib.scene.mrml import LESION_TERMINOLOGY, TERMINOLOGY_CONTEXT

    term = json.loads((MODULE_DIR / "Resources/Terminology/SegmentationCategoryType-BreastCADx.term.json").read_text())
    assert term["SegmentationCategoryTypeContextName"] == TERMINOLOGY_CONTEXT
    category = term["SegmentationCodes"]["Category"][0]
    kind = category["Type"][0]
    assert LESION_TERMINOLOGY.startswith(f"{TERMINOLOGY_CONTEXT}~SCT^{category['CodeValue']}^")
    assert f"~SCT^{kind['CodeValue']}^{kind['CodeMeaning']}~" in LESION_TERMINOLOGY


def test_ci_runs_exactly_the_readme_test_command():
    readme = (REPO / "README.md").read_text().split("```bash", 1)[1].split("```", 1)[0]
    command = [line for line in readme.splitlines() if line and not line.startswith("#")][1]
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == command == "bash scripts/run_tests.sh"
