"""Inference engines (ONNX Runtime on the CPU, PyTorch otherwise) and the working grid of large images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from BreastCADxLib.analysis import inference
from BreastCADxLib.analysis.networks import lesion_unet
from BreastCADxLib.analysis.pipeline import analyze
from BreastCADxLib.analysis.preprocessing import WORK_SIDE, working_grid
from BreastCADxLib.analysis.registry import load_card, load_state_dict
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL, LesionSegmenter
from BreastCADxLib.io import load_image
from conftest import MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data" / "busi"


@pytest.fixture()
def shipped_net():
    card = load_card(DEFAULT_MODEL)
    net = lesion_unet(pretrained=False)
    net.load_state_dict(load_state_dict(card))
    return card, net.eval()


def test_onnx_engine_reproduces_pytorch_and_is_cached(tmp_path, monkeypatch, shipped_net):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("BREASTCADX_CACHE", str(tmp_path))
    card, net = shipped_net
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 256, 256)).astype(np.float32))
    engine = inference.engine_for(net, x[:1], "test-seg", torch.device("cpu"))
    assert engine.name == "onnxruntime"
    with torch.inference_mode():
        expected = net(x)
    assert float((engine(x) - expected).abs().max()) < inference.TOLERANCE  # batch of 2 through a batch-1 export
    meta = next(tmp_path.glob("test-seg-*.json"))
    assert json.loads(meta.read_text())["max_abs_diff"] < inference.TOLERANCE
    again = inference.cached_engine("test-seg", (3, 256, 256), torch.device("cpu"))
    assert again is not None and again.name == "onnxruntime"  # no network needed the second time
    assert inference.cached_engine("other-weights", (3, 256, 256), torch.device("cpu")) is None


def test_a_disagreeing_or_unwritable_graph_falls_back_to_pytorch(tmp_path, monkeypatch, shipped_net):
    card, net = shipped_net
    monkeypatch.setenv("BREASTCADX_CACHE", str(tmp_path))
    example = torch.zeros(1, 3, 256, 256)
    inference.engine_for(net, example, "bad", torch.device("cpu"))
    meta = next(tmp_path.glob("bad-*.json"))
    meta.write_text(json.dumps({"max_abs_diff": 1.0}))  # as if the exported graph had disagreed
    assert inference.engine_for(net, example, "bad", torch.device("cpu")).name == "torch"
    assert inference.cached_engine("bad", (3, 256, 256), torch.device("cpu")) is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BREASTCADX_CACHE", str(blocker / "cache"))  # cannot be created
    assert inference.engine_for(net, example, "x", torch.device("cpu")).name == "torch"
    monkeypatch.setenv("BREASTCADX_BACKEND", "torch")
    monkeypatch.setenv("BREASTCADX_CACHE", str(tmp_path))
    assert inference.engine_for(net, example, "test-seg", torch.device("cpu")).name == "torch"


def test_both_engines_give_the_same_mask(monkeypatch, shipped_net):
    card, net = shipped_net
    image = load_image(DATA / "malignant_001.png")
    masks = {}
    for backend in ("auto", "torch"):
        monkeypatch.setenv("BREASTCADX_BACKEND", backend)
        seg = LesionSegmenter.from_registry()
        masks[seg.engine.name] = seg.segment(image, expect_lesion=True).mask
    a, b = masks["onnxruntime"], masks["torch"]
    assert a.any() and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.999


def test_large_image_is_analysed_on_a_working_grid_and_answers_on_its_own(tmp_path):
    """A 2000x2000 frame (a BUSI lesion upscaled): mask and heatmap on the input grid; a given mask unchanged;
    the answer is the one for the image handed over at the working size."""
    small = load_image(DATA / "malignant_001.png")
    ref_mask = np.asarray(PILImage.open(DATA / "malignant_001_mask.png").convert("L")) > 127
    PILImage.open(DATA / "malignant_001.png").convert("L").resize((2000, 2000), PILImage.BICUBIC).save(
        tmp_path / "big.png")
    big = load_image(tmp_path / "big.png")
    big_mask = np.asarray(PILImage.fromarray(ref_mask).resize((2000, 2000), PILImage.NEAREST))[None]
    grid = working_grid(big.array.shape)
    assert grid.resized and max(grid.work_shape()) == WORK_SIDE
    assert not working_grid(small.array.shape).resized  # every training image is analysed as it is
    auto = analyze(big, heatmap=True, expect_lesion=True)
    assert auto.mask.shape == big.array.shape and auto.heatmap.shape == big.array.shape
    assert auto.extra["working_size"] == list(grid.work_shape())
    dice = 2 * (auto.mask & big_mask).sum() / (auto.mask.sum() + big_mask.sum())
    assert dice > 0.8, dice
    given = analyze(big, mask=big_mask.copy(), heatmap=False)
    assert np.array_equal(given.mask, big_mask)  # the user's mask comes back as it was
    assert given.measurements["lesion_pixels"] == int(big_mask.sum())
    work = big.with_array(grid.down(big.array))  # the same case handed over at the working size
    direct = analyze(work, mask=grid.down(big_mask, is_mask=True), heatmap=False)
    assert abs(given.probability - direct.probability) < 1e-6
