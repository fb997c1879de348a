"""The image-level presence loss of training.segmentation.train: decided by the hottest pixels, not the mean."""

from __future__ import annotations

import torch

from training.segmentation.train import presence_loss


def test_presence_loss_punishes_a_small_hot_spot_on_a_normal_image():
    cold = torch.full((1, 1, 100, 100), -6.0)
    spot = cold.clone()
    spot[..., 10:15, 10:15] = 6.0  # 25 of 10,000 pixels: a false lesion the mean would hide
    empty = torch.zeros_like(cold)
    assert presence_loss(cold, empty) < 0.01
    assert presence_loss(spot, empty) > 5.0

    lesion = torch.zeros_like(cold)
    lesion[..., 40:60, 40:60] = 1
    found = torch.where(lesion > 0, 6.0, -6.0)
    assert presence_loss(found, lesion) < 0.01
    assert presence_loss(cold, lesion) > 5.0  # a missed lesion
