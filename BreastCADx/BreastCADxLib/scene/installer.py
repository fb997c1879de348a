"""The module's Python requirements: which are missing (Slicer-free) and installing them inside Slicer."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

NO_DEPS_FILE = "requirements-nodeps.txt"  # beside requirements.txt: installed with pip --no-deps


def read_requirements(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def missing_requirements(requirements: list[str]) -> list[str]:
    """Requirements that are not installed or whose installed version does not satisfy the specifier."""
    from packaging.requirements import Requirement

    missing = []
    for text in requirements:
        req = Requirement(text)
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(text)
            continue
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing


def ensure_dependencies(requirements_path: str | Path) -> None:
    """In Slicer, first use: install what the requirements file lists (asking first); torch through PyTorchUtils
    (the PyTorch extension picks the CPU or CUDA build), else the CPU wheel."""
    import slicer

    try:
        import torch  # noqa: F401
    except ImportError:
        try:
            import PyTorchUtils
        except ImportError:
            if not slicer.util.confirmOkCancelDisplay(
                    "BreastCADx needs PyTorch. Install the CPU build now (several minutes)? For a GPU build, "
                    "install the PyTorch extension from the Extension Manager first."):
                raise RuntimeError("PyTorch is required; installation was declined.") from None
            slicer.util.pip_install(["torch", "--index-url", "https://download.pytorch.org/whl/cpu"])
        else:
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                raise RuntimeError("PyTorch is required; installation was declined or failed.")
    requirements = read_requirements(Path(requirements_path))
    no_deps = Path(requirements_path).with_name(NO_DEPS_FILE)
    missing_no_deps = missing_requirements(read_requirements(no_deps)) if no_deps.is_file() else []
    if missing_no_deps:
        slicer.util.pip_install(["--no-deps", *missing_no_deps])
    if not missing_requirements(requirements):
        return
    try:
        from slicer import packaging

        packaging.pip_ensure(packaging.load_requirements(str(requirements_path)), requester="BreastCADx")
    except (ImportError, AttributeError):  # Slicer before pip_ensure
        missing = missing_requirements(requirements)
        if not slicer.util.confirmOkCancelDisplay("BreastCADx will install: " + ", ".join(missing) + ". Continue?"):
            raise RuntimeError("Required Python packages were not installed.") from None
        slicer.util.pip_install(missing)
