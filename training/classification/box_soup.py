"""A uniform "soup" of box-CNN runs: the mean of their weights (Wortsman et al., ICML 2022), scored like a run.

    python -m training.classification.box_soup --runs runs/box_A runs/box_A_s1 --score busbra_l5 \
        --pass runs/site_pass/busi-only__busbra_l5__train+val.npz --out runs/box_A_soup

Runs fine-tuned from the same ImageNet weights with another seed land in one basin, so their mean is one network
(the product's cost stays one model) that is often better than each at a site none of them saw. Writes
OUT/model.pt (float32 state dict) and, with --score, OUT/scores.npz in box_cnn's layout (the views of
--eval-margins, each mirrored; the other site's non-test rows), for training.classification.box_fusion. One run
alone is that run, rescored on other views. Test splits are not read.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from BreastCADxLib.analysis.deep_features import CONTEXT_MARGIN
from BreastCADxLib.analysis.networks import ARCHS, BoxNet
from training.classification.box_cnn import margins_of, predict, score_sets
from training.data import add_data_args, cases
from training.segmentation.site_pass import load_pass


def soup(runs: list[Path]) -> dict[str, torch.Tensor]:
    states = [torch.load(r / "model.pt", map_location="cpu", weights_only=True) for r in runs]
    if any(s.keys() != states[0].keys() for s in states):
        raise SystemExit("the runs are not the same network")
    return {k: (torch.stack([s[k].float() for s in states]).mean(0) if states[0][k].is_floating_point()
                else states[0][k]) for k in states[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_args(ap)
    ap.add_argument("--runs", type=Path, nargs="+", required=True)
    ap.add_argument("--arch", default="lite0", choices=sorted(ARCHS))
    ap.add_argument("--score", default="none", help="the site scored ('none': no scoring; never test rows)")
    ap.add_argument("--pass", dest="pass_file", type=Path, help="segmenter pass NPZ of the scored site")
    ap.add_argument("--eval-margins", default=str(CONTEXT_MARGIN), help="context margins of the scored views")
    ap.add_argument("--view", choices=["box", "whole"], default="box", help="the view the runs were trained on")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    state = soup(args.runs)
    torch.save(state, args.out / "model.pt")
    report = {"runs": [str(r) for r in args.runs], "eval_margins": args.eval_margins, "view": args.view}
    if args.score != "none":
        model = BoxNet(args.arch, pretrained=False)
        model.load_state_dict(state)
        scored = score_sets(cases(args, [args.score], ("train", "val"), lesions_only=True),
                            load_pass(args.pass_file) if args.pass_file else {}, margins_of(args.eval_margins),
                            args.view)
        probs = {kind: predict(model, crops, bf16=True) for kind, (_, _, crops) in scored.items()}
        np.savez_compressed(args.out / "scores.npz", **{f"{k}_case": np.array(scored[k][0]) for k in probs},
                            **{f"{k}_prob": v for k, v in probs.items()}, **{f"{k}_label": scored[k][1] for k in probs})
        report |= {f"auc_{k}": round(float(roc_auc_score(scored[k][1], p)), 4) for k, p in probs.items()}
    (args.out / "soup.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
