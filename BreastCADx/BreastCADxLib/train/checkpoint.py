"""Resumable network training for `breastcadx train`'s stages: a checkpoint after every epoch (weights_only), a
rerun of the same run goes on from it, a finished run leaves float16 weights and fit.json."""

from __future__ import annotations

import json
from pathlib import Path

from BreastCADxLib.train.pipeline import TrainError

FINE_TUNE_LR = 0.1  # x the stage's learning rate when a run starts from a trained network (--from)


def use_bf16(device) -> bool:
    """bfloat16 autocast (with channels_last): on CUDA, and on CPUs whose oneDNN has bf16 kernels."""
    import torch

    if device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resume(folder: Path, run: dict, net, opt, sched) -> tuple[int, float, int]:
    """(first epoch, seconds spent, starts) from folder/checkpoint.pt, which must be of this `run` (TrainError
    naming the folder otherwise); (0, 0.0, 1) when there is none."""
    import torch

    ckpt = folder / "checkpoint.pt"
    if not ckpt.is_file():
        return 0, 0.0, 1
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if state["run"] != run:
        raise TrainError(f"the checkpoint in {folder.name} is of another run (other images or options); "
                         "remove that folder to start it again", folder)
    net.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    return state["epoch"], state.get("seconds", 0.0), state.get("starts", 1) + 1


def save(folder: Path, run: dict, epoch: int, net, opt, sched, seconds: float, starts: int) -> None:
    """folder/checkpoint.pt after `epoch` epochs, replaced atomically."""
    import torch

    tmp = folder / "checkpoint.tmp"
    torch.save({"run": run, "epoch": epoch, "model": net.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "seconds": seconds, "starts": starts}, tmp)
    tmp.replace(folder / "checkpoint.pt")


def finish(folder: Path, net, record: dict) -> Path:
    """folder/model.pt (float16 state dict) and fit.json; the checkpoint removed."""
    import torch

    final = folder / "model.pt"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, final)
    (folder / "fit.json").write_text(json.dumps(record))
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    return final


__all__ = ["use_bf16", "resume", "save", "finish"]
