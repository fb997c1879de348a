"""Which of the module's Python requirements are missing (Slicer-free; the install itself is in BreastCADx.py)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


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
