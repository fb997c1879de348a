"""What a benchmark ran on: written beside every result (results are only comparable on the same machine)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from training.data import BUSI_ONLY, HELD_OUT_BUSI  # sets used by folder (re-exported)


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def site_args(doc: str, out: Path):
    """The arguments of a benchmark over the sites' data: the data folders and --out."""
    import argparse

    from training.data import add_data_args

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--out", type=Path, default=out)
    return ap.parse_args()


def stamp() -> dict:
    """What every benchmark report starts with: the date, the machine and its load."""
    from datetime import datetime, timezone

    return {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
            "loadavg_1min": os.getloadavg()[0]}


def machine_text(m: dict) -> str:
    """A machine() record in words: CPU, cores, torch, device."""
    device = f"CUDA {m['cuda']}" if m.get("cuda") else "CPU only"
    return f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({device})"


def header(title: str, report: dict, made_by: str) -> list[str]:
    """The first lines of a result file: title, date, machine (with the load around the run), how it was made."""
    load = (f"; 1-min load average {report['loadavg_1min']:.2f} at the start, {report['loadavg_1min_end']:.2f} at the "
            "end" if "loadavg_1min_end" in report else "")
    return [f"# {title}", "", f"Date: {report['date']}  ", f"Machine: {machine_text(report['machine'])}{load}  ",
            made_by]


def write_results(out: Path, name: str, report: dict, markdown: str) -> None:
    """results/<name>.json and .md, stamped with the load at the end of the run; the markdown is printed."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / f"{name}.md").write_text(markdown)
    print(markdown)


def set_id(model_set: str) -> str:
    """A set's own id (its manifest), for result file names: 'three-site', or 'busi-only' for its folder."""
    from BreastCADxLib.analysis.registry import model_set_info

    return str(model_set_info(model_set)["id"])


def set_folder(name: str) -> str:
    """A set named in an earlier result (e.g. 'two-site', shipped until 2026-12-05) -> where it is now."""
    from training.restore_set import TWO_SITE  # never saw BUS-UCLM; restored from git

    return str({"busi-only": BUSI_ONLY, "two-site": TWO_SITE, "held-out-busi": HELD_OUT_BUSI}.get(name, name))
