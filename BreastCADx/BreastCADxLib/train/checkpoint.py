"""Resumable network training for `breastcadx train`'s stages: a checkpoint after every epoch (weights_only), a
rerun of the same run goes on from it, a finished run leaves float16 weights and fit.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

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


def load_weights(net, weights: Path):
    """net with a trained network's weights (a float16 state dict on disk, loaded pickle-free), in float32."""
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net


def network(net, init: Path | None, device):
    """(net on the device, bf16): from `init`'s weights when given (--from: a trained network of the source set,
    float16 on disk), channels_last where bf16 autocast is used."""
    import torch

    if init is not None:
        load_weights(net, init)
    net = net.to(device)
    bf16 = use_bf16(device)
    return (net.to(memory_format=torch.channels_last) if bf16 else net), bf16


def finished(folder: Path, run: dict) -> Path | None:
    """folder/model.pt when this `run` finished there (its fit.json names the same run); None when not finished;
    TrainError naming the folder when another run finished there."""
    final, record = folder / "model.pt", folder / "fit.json"
    if not final.is_file():
        return None
    if not record.is_file() or json.loads(record.read_text()).get("run") != run:
        raise TrainError(f"{folder.name} holds a network of another run (other images or options); remove that "
                         "folder to train it again", folder)
    return final


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


class Resumable:
    """One network's training run in `folder`: goes on from its checkpoint, a step per batch (bf16 autocast and
    channels_last where the device has them), after every epoch a checkpoint, a progress line and the time box."""

    def __init__(self, folder: Path, run: dict, net, opt, sched, *, epochs: int, bf16: bool, say, label: str,
                 stage: str, deadline: float) -> None:
        self.folder, self.run, self.net, self.opt, self.sched = folder, run, net, opt, sched
        self.epochs, self.bf16, self.say, self.label = epochs, bf16, say, label
        self.stage, self.deadline = stage, deadline
        self.start, self.spent, self.starts = resume(folder, run, net, opt, sched)
        self.t0, self.done = time.perf_counter(), 0

    def step(self, x, y, loss_fn) -> float:
        """One batch; a network with several heads returns a tuple, which loss_fn gets as is (in float32)."""
        import torch

        if self.bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.net(x)
        loss = loss_fn(tuple(o.float() for o in out) if isinstance(out, tuple) else out.float(), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.sched.step()
        return loss.item()

    @property
    def seconds(self) -> float:
        return self.spent + time.perf_counter() - self.t0

    def end_epoch(self, epoch: int, losses: list[float]) -> None:
        """After epoch `epoch` (0-based): checkpoint, progress; TrainError past the deadline (run again to go on)."""
        save(self.folder, self.run, epoch + 1, self.net, self.opt, self.sched, self.seconds, self.starts)
        self.done += 1
        left = (time.perf_counter() - self.t0) / self.done * (self.epochs - epoch - 1)
        self.say(f"{self.label}: epoch {epoch + 1}/{self.epochs}, loss {np.mean(losses):.3f}, "
                 f"about {left / 60:.0f} min left")
        if time.time() > self.deadline and epoch + 1 < self.epochs:
            raise TrainError(f"--max-minutes reached in the {self.stage} stage ({self.label}, epoch {epoch + 1} of "
                             f"{self.epochs}; run the same command again to go on)", self.folder)

    def finish(self, record: dict) -> Path:
        return finish(self.folder, self.net, {**record, "seconds": round(self.seconds, 1), "starts": self.starts,
                                              "run": self.run})


__all__ = ["use_bf16", "network", "finished", "resume", "save", "finish", "Resumable"]
