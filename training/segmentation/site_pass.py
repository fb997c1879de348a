"""Run a segmenter over one site's images and keep everything later steps need (no second pass).

    python -m training.segmentation.site_pass --run runs/seg_A --site busbra_l5 --roles train,val
    python -m training.segmentation.site_pass --run shipped --site busbra_l5 --roles train,val

Per image: the whole-image probability map after the cascade (uint8, 0..255), the default mask, the
lesion-expected mask (the panel's default) and the ROI-box mask (reference box + 10 %, as in the benchmarks).
Leave-site-out use: a run trained on one site, passed over the other. Writes runs/site_pass/<run>__<site>.npz.
Test splits are read only when --roles names them (the final report).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from BreastCADxLib.analysis.networks import lesion_unet
from BreastCADxLib.analysis.preprocessing import expand_box, mask_bbox
from BreastCADxLib.analysis.registry import load_card
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL, LesionSegmenter
from BreastCADxLib.image import Image
from training.data import add_data_args, cases

OUT = Path("runs/site_pass")
# the post-processing tuned on BUSI val for the single-site model (session 3), the starting point for new runs;
# the presence threshold is then re-chosen cross-site (training.segmentation.tune_presence)
BASE_POSTPROCESSING = {"threshold": 0.35, "presence": 0.9, "min_area_fraction": 0.003, "keep_fraction": 0.1,
                       "flip_tta": False, "refine_margin": 0.2, "candidate_relative": 0.3,
                       "roi_candidate_relative": 0.1}


def run_segmenter(run: str, device: str = "cpu", postprocessing: dict | None = None,
                  torch_net: bool = False) -> LesionSegmenter:
    """'shipped' (the registry's default set), 'set:NAME|FOLDER' (a model set), or a training run folder
    (fp32 model.pt + best.json) whose card is the shipped card with the run's input size and architecture and
    BASE_POSTPROCESSING (updated by `postprocessing`). torch_net: a set's network in PyTorch, never a cached graph
    (for experiments that change the network)."""
    if run == "shipped" or run.startswith("set:"):
        from BreastCADxLib.analysis.registry import load_state_dict, model_set_dir

        folder = model_set_dir(run[4:]) if run.startswith("set:") else None
        if not torch_net:
            return LesionSegmenter.from_registry(DEFAULT_MODEL, device, folder)
        card = load_card(DEFAULT_MODEL, folder)
        net = lesion_unet(pretrained=False, arch=card.arch)
        net.load_state_dict(load_state_dict(card))
        return LesionSegmenter(card, net, device)
    import json

    best = json.loads((Path(run) / "best.json").read_text())
    arch, size = best["args"].get("arch", "lite0"), int(best["args"]["size"])
    card = load_card(DEFAULT_MODEL)
    card = replace(card, id=Path(run).name, input={**card.input, "height": size, "width": size},
                   postprocessing={**BASE_POSTPROCESSING, **(postprocessing or {})})
    net = lesion_unet(pretrained=False, arch=arch)
    net.load_state_dict(torch.load(Path(run) / "model.pt", map_location="cpu", weights_only=True))
    return LesionSegmenter(card, net, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--run", required=True, help="'shipped', 'set:NAME|FOLDER' (a model set) or a runs/ folder")
    ap.add_argument("--site", required=True)
    ap.add_argument("--roles", default="train,val")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--roi-outliner", choices=["network", "litemedsam"],
                    help="what outlines inside a ROI box (default: the network; litemedsam: an experiment)")
    ap.add_argument("--flip-tta", action="store_true", help="average with the mirrored image (default: as the card)")
    ap.add_argument("--bn", help="test-time batch-norm statistics: image:ALPHA or site (training.experiments."
                                 "test_time_bn; an experiment)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seg = run_segmenter(args.run, torch_net=bool(args.bn))
    if args.roi_outliner == "litemedsam":
        from training.experiments.box_prompt import LiteMedSamSegmenter

        seg = LiteMedSamSegmenter(seg.card, seg.net, "cpu", engine=seg.engine)  # LiteMedSAM inside the box
    if args.flip_tta:
        seg.flip_tta = True
    todo = cases(args, [args.site], tuple(args.roles.split(",")))
    if args.bn:
        from training.experiments import test_time_bn

        if args.bn == "site":
            test_time_bn.site_statistics(seg, [c.load()[0] for c in todo])
        else:
            test_time_bn.blend_image_statistics(seg.net, float(args.bn.split(":")[1]))
    keep: dict[str, list] = {k: [] for k in ("case", "prob", "default", "expect", "roi", "low_confidence", "seconds")}
    t0 = time.time()
    for i, c in enumerate(todo):
        img, ref = c.load()
        t = time.perf_counter()
        res = seg.segment(Image(array=img))
        keep["seconds"].append(time.perf_counter() - t)
        prob = res.probability[0]
        default = res.mask[0]
        expect, low = default, False
        if not default.any():  # the lesion-expected path differs only here
            e = seg.segment(Image(array=img), expect_lesion=True)
            expect, low = e.mask[0], e.low_confidence
        box = mask_bbox(ref)
        # a drawn box says a lesion is there: the prompted path keeps its best candidate (as the panel does)
        roi = seg.segment(Image(array=img), roi=expand_box(box, 0.10, ref.shape), expect_lesion=True).mask[0] \
            if box else default
        for k, v in (("case", c.case), ("prob", np.round(prob * 255).astype(np.uint8)), ("default", default),
                     ("expect", expect), ("roi", roi), ("low_confidence", low)):
            keep[k].append(v)
        if (i + 1) % 50 == 0:
            print(f"{i + 1}/{len(todo)} {time.time() - t0:.0f}s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = pass_name(args.run) + (f"+{args.roi_outliner}" if args.roi_outliner else "") + \
        ("+tta" if args.flip_tta else "") + (f"+bn{args.bn.replace(':', '')}" if args.bn else "")
    path = args.out / f"{name}__{args.site}__{args.roles.replace(',', '+')}.npz"
    arrays = {k: np.array(v) for k, v in keep.items() if k in ("case", "low_confidence", "seconds")}
    for k in ("prob", "default", "expect", "roi"):  # ragged: one entry per image
        arrays.update({f"{k}_{i}": a for i, a in enumerate(keep[k])})
    np.savez_compressed(path, **arrays)
    print(f"wrote {path} ({len(todo)} images, {time.time() - t0:.0f}s)")


def rethreshold(prob: np.ndarray, presence: float) -> np.ndarray:
    """The default mask of a pass's probability map at another presence threshold (BASE_POSTPROCESSING otherwise)."""
    from BreastCADxLib.analysis.segmentation import postprocess

    post = BASE_POSTPROCESSING
    return postprocess(prob, post["threshold"], presence, post["min_area_fraction"], post["keep_fraction"])


def pass_name(run: str) -> str:
    """'set:three-site' -> three-site; 'set:FOLDER' -> the folder's name; a run folder -> its name."""
    return Path(run[4:]).name if run.startswith("set:") else run if run == "shipped" else Path(run).name


def load_pass(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """case -> {prob (float 0..1), default, expect, roi, low_confidence}."""
    z = np.load(path, allow_pickle=False)
    out = {}
    for i, case in enumerate(z["case"]):
        out[str(case)] = {"prob": z[f"prob_{i}"].astype(np.float32) / 255.0, "default": z[f"default_{i}"],
                          "expect": z[f"expect_{i}"], "roi": z[f"roi_{i}"],
                          "low_confidence": bool(z["low_confidence"][i])}
    return out


if __name__ == "__main__":
    main()
