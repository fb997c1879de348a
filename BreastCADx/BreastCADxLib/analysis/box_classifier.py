"""The image-level members of the fusion: P(malignant) from the pixels of the lesion's box crop (grey in all three
channels, no mask channel: the outline only places the box), by an EfficientNet-Lite0 fine-tuned end to end; and
the same network on the whole image (card `view: whole`: the outline only picks the frame), which needs no outline
at all and so still sees a lesion the automatic mask missed.

Chosen leave-site-out because it leans on the image rather than on how the outline was drawn: trained on one
hospital it ranks the other hospital's lesions about as well with automatic masks as with the reference
outlines (`benchmarks/results/leave_site_out_design.md`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.analysis.cards import ImageCnnCard
from BreastCADxLib.analysis.deep_features import CONTEXT_MARGIN, CROP_SIZE, gradcam_map, lesion_frame, roi_crop
from BreastCADxLib.analysis.inference import Engine, card_engine
from BreastCADxLib.analysis.registry import (
    DEFAULT_MODEL_SET,
    choose_device,
    load_card,
    load_state_dict,
    model_set_dir,
)
from BreastCADxLib.image import Image

BOX_MODEL = "lesion_box_cnn"
WHOLE_MODEL = "lesion_whole_cnn"


def whole_image_mask(mask: np.ndarray) -> np.ndarray:
    """A mask covering the whole frame the lesion is on (view "whole": the crop is the whole image)."""
    out = np.zeros(mask.shape, bool)
    out[lesion_frame(mask)] = True
    return out


def box_views(image: Image, mask: np.ndarray, margins: tuple[float, ...] = (CONTEXT_MARGIN,),
              view: str = "box") -> torch.Tensor:
    """The crops the member scores, (2 x len(margins), 3, 224, 224): the lesion's box with each context margin
    (x the box side, each side) and the mirror of each; the member's answer is their mean logit. View "whole":
    the whole image of the lesion's frame, letterboxed, and its mirror."""
    if view == "whole":
        mask, margins = whole_image_mask(mask), (0.0,)
    x = torch.stack([roi_crop(image, mask, margin=m, kind="box").tensor for m in margins])
    return torch.cat([x, x.flip(-1)])


class MemberScorer:
    """One image-level member of the fusion (its card's view: "box", the box crop; "whole", the whole image)."""

    def __init__(self, card: ImageCnnCard, engine: Engine, device: torch.device | None = None) -> None:
        self.card, self.engine = card, engine
        self.device = device or torch.device("cpu")
        self._net: torch.nn.Module | None = None
        self.margins = tuple(float(m) for m in card.crop_margins or [CONTEXT_MARGIN])
        self.view = card.view

    @classmethod
    def from_registry(cls, model_id: str = BOX_MODEL, device: str | None = "auto",
                      models_dir: Path | None = None) -> MemberScorer:
        from BreastCADxLib.analysis.networks import BoxNet

        card = load_card(model_id, models_dir)
        engine, _ = card_engine(card, (3, CROP_SIZE, CROP_SIZE), choose_device(device),
                                lambda: BoxNet(card.arch, pretrained=False))
        return cls(card, engine, choose_device(device))

    def probability(self, image: Image, mask: np.ndarray) -> float:
        """Mean logit of the box views (as in training's scoring), as a probability."""
        return float(torch.sigmoid(self.engine(box_views(image, mask, self.margins, self.view)).float().mean()))

    def gradcam(self, image: Image, mask: np.ndarray) -> np.ndarray:
        """Grad-CAM of the member's logit on its middle view (the network in PyTorch, built on first use)."""
        from BreastCADxLib.analysis.networks import BoxNet, LinearScore

        if self._net is None:
            net = BoxNet(self.card.arch, pretrained=False)
            net.load_state_dict(load_state_dict(self.card))
            score = net.score
            self._net = LinearScore(net.trunk, score.weight.detach(), float(score.bias.detach())).to(self.device)
        margin = sorted(self.margins)[len(self.margins) // 2]
        if self.view == "whole":
            mask, margin = whole_image_mask(mask), 0.0
        return gradcam_map(self._net.eval(), roi_crop(image, mask, margin=margin, kind="box"), image, self.device)


@lru_cache(maxsize=4)
def get_member_scorer(model_id: str = BOX_MODEL, device: str = "auto", model_set: str = DEFAULT_MODEL_SET
                      ) -> MemberScorer:
    return MemberScorer.from_registry(model_id, device, model_set_dir(model_set))
