"""Test-time batch-norm statistics for a segmenter at a hospital it never saw (an experiment of site_pass --bn).

Two ways, neither needing a label:
- image:A  every batch-norm layer normalises with A x its training statistics + (1 - A) x the statistics of the
  image in front of it (one image, so the default path could use it with no site data at all);
- site     the statistics re-estimated over the site's own images (AdaBN), what a hospital could do from its
  unlabelled images.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _norm_layers(net: torch.nn.Module) -> list[torch.nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def blend_image_statistics(net: torch.nn.Module, alpha: float) -> int:
    """Patch every BatchNorm2d of `net` (eval mode) to mix its running statistics with the input's; returns
    how many layers were patched."""
    layers = _norm_layers(net)
    for bn in layers:
        def forward(x: torch.Tensor, bn: torch.nn.BatchNorm2d = bn) -> torch.Tensor:
            mean = x.mean((0, 2, 3))
            var = x.var((0, 2, 3), unbiased=False)
            m = alpha * bn.running_mean + (1 - alpha) * mean
            # the mixture's variance (source spread + this image's spread + the distance between the means)
            v = alpha * bn.running_var + (1 - alpha) * var + alpha * (1 - alpha) * (mean - bn.running_mean) ** 2
            return F.batch_norm(x, m, v, bn.weight, bn.bias, False, 0.0, bn.eps)
        bn.forward = forward
    return len(layers)


def site_statistics(seg, planes: list[np.ndarray]) -> int:
    """Re-estimate every BatchNorm2d's statistics over `planes` (whole images, as the default path sees them)."""
    net = seg.net
    layers = _norm_layers(net)
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # a plain average over the site's images
        bn.train()
    with torch.no_grad():
        for plane in planes:
            seg.probability(plane)
    net.eval()
    return len(planes)
