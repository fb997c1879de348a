"""Segmenter training step on this CPU: fp32 vs bfloat16 autocast vs bfloat16 + channels_last.

    python -m benchmarks.training_speed

One AdamW step of the Lite0 FlexibleUNet (batch 8, DiceCE loss) at 224 and 256 px; the best of 3 timed steps
after one warm-up. The fp32 step is the baseline measured in the same run. Writes
benchmarks/results/training_speed.md.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from monai.losses import DiceCELoss

from benchmarks.machine import machine
from BreastCADxLib.analysis.networks import lesion_unet

MODES = ("fp32", "bf16", "bf16+channels_last")


def step_seconds(size: int, mode: str, batch: int = 8) -> float:
    torch.manual_seed(0)
    model = lesion_unet(pretrained=False)
    x, y = torch.randn(batch, 3, size, size), (torch.rand(batch, 1, size, size) > 0.7).float()
    if mode.endswith("channels_last"):
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    opt, loss_fn, times = torch.optim.AdamW(model.parameters(), 1e-3), DiceCELoss(sigmoid=True), []
    for _ in range(4):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode != "fp32"):
            out = model(x)
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return min(times[1:])


def main() -> None:
    m = machine()
    lines = ["# Segmenter training step: fp32 vs bfloat16 on CPU\n",
             f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  \nMachine: {m['cpu']}, "
             f"{m['cores']} cores, torch {m['torch']}\n", "| size | mode | s/step (batch 8) | speed-up vs fp32 |",
             "|---|---|---|---|"]
    for size in (224, 256):
        base = None
        for mode in MODES:
            s = step_seconds(size, mode)
            base = base or s
            lines.append(f"| {size} | {mode} | {s:.3f} | {base / s:.2f}x |")
    text = "\n".join(lines) + "\n"
    Path("benchmarks/results/training_speed.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
