"""The module's Python requirements: which are missing (Slicer-free) and installing them inside Slicer."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError


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


class InstallDeclined(BreastCADxError):
    """The user declined to install what BreastCADx needs; nothing was installed and nothing ran."""


class InstallFailed(BreastCADxError):
    """Installing what BreastCADx needs failed (no network, no permission, a package index refused)."""


def _confirm(text: str) -> None:
    import slicer

    if not slicer.util.confirmOkCancelDisplay(text):
        raise InstallDeclined("BreastCADx needs Python packages that are not installed yet, and installing them "
                              "was declined. Nothing was changed; press the button again to install them.")


def _pip(args: list[str]) -> None:
    import slicer

    try:
        slicer.util.pip_install(args)
    except Exception as e:  # pip's own message says why (network, permissions, index)
        raise InstallFailed(f"installing {' '.join(args)} failed ({e.__class__.__name__}: {e}); check the "
                            "network connection and see the Python console for pip's output") from None


def ensure_dependencies(requirements_path: str | Path) -> None:
    """In Slicer, first use: install what the requirements file lists (asking first); torch through PyTorchUtils
    (the PyTorch extension picks the CPU or CUDA build), else the CPU wheel. Raises InstallDeclined or InstallFailed
    (clear messages for the panel); called before any job, never at start-up."""

    path = Path(requirements_path)
    try:
        import torch  # noqa: F401
    except ImportError:
        try:
            import PyTorchUtils
        except ImportError:
            _confirm("BreastCADx needs PyTorch. Install the CPU build now (several minutes)? For a GPU build, "
                     "install the PyTorch extension from the Extension Manager first.")
            _pip(["torch", "--index-url", "https://download.pytorch.org/whl/cpu"])
        else:
            if PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=True) is None:
                raise InstallDeclined("PyTorch is required and was not installed (declined or failed in the "
                                      "PyTorch extension); press the button again to retry.")
    missing = missing_requirements(read_requirements(path))
    if not missing:
        return
    try:  # Slicer >= 5.11: one dialog, constraints shared with other extensions
        import slicer.pydeps as pydeps
    except ImportError:
        pydeps = None
    if pydeps is not None:
        try:
            pydeps.pip_ensure(pydeps.load_requirements(str(path)), requester="BreastCADx")
        except Exception as e:
            raise InstallFailed(f"installing the packages of {path.name} failed ({e.__class__.__name__}: {e})"
                                ) from None
    else:
        _confirm("BreastCADx will install: " + ", ".join(missing) + ". Continue?")
        _pip(["-r", str(path)])
