"""Stand-in for slicer.pydeps (Slicer >= 5.11); importable only when STANDIN_PYDEPS=1 (an older Slicer has none)."""

import os

from slicer.standin import record

if os.environ.get("STANDIN_PYDEPS") != "1":
    raise ImportError("no slicer.pydeps in this Slicer")


def load_requirements(path):
    record("load_requirements", str(path))
    return [line for line in open(path).read().splitlines() if line and not line.startswith("#")]


def pip_ensure(requirements, requester=None, **kwargs):
    record("pip_ensure", requester, len(requirements))
