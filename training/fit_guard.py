"""Fit the input guard of a model set (analysis/guard.py) and choose its threshold leave-site-out.

    python -m training.fit_guard --sites busi,busbra_l5                                       # two-site set
    python -m training.fit_guard --sites busi --models BreastCADx/Resources/Models/busi-only  # busi-only set

Embeddings: the frozen ImageNet Lite0 trunk on whole images (train + val splits; test splits are not read).
Negatives: non-ultrasound families (mini-MIAS film mammograms from the project's data, an MR slice and three
pictures of matplotlib's sample data, synthetic patterns, rendered text pages), each image cropped and flipped
many ways, and near misses made from the sites' own ultrasound: rotated a quarter turn, upside down, inverted
(a negative image). A near miss made from a site is left out of every fit that holds that site out.
Model: L2 logistic regression, ultrasound (train split of the fit sites) vs negatives.
Threshold on P(ultrasound), measured not guessed: for each site S, a model fitted without S scores S's images;
the threshold is the lowest of their 1st percentiles and of the 0.5th percentile of the fit's own val images,
so ultrasound from a new hospital passes about as often as one of our sites passes the other's model.
Reported: the unseen site's pass rate, and each negative family's refusal rate by a model fitted without that
family (how a kind of image never shown to the guard fares): benchmarks/results/input_guard*.{md,json}.
A one-class design (PCA distance to the training images) is scored first, for the record.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage
from sklearn.linear_model import LogisticRegression

from BreastCADxLib.analysis.cards import GuardCard
from BreastCADxLib.analysis.guard import GUARD_ID, embed, embedder, ultrasound_probability
from BreastCADxLib.analysis.registry import MODELS_DIR, save_card, sha256_of
from training.data import SITES, add_data_args, cases, citations

CACHE = Path("runs/guard")
C = 0.1


def site_embeddings(engine, args, site: str) -> dict[str, np.ndarray]:
    """train/val embeddings of a site (cached in runs/guard/) and the image sizes."""
    path = CACHE / f"{site}.npz"
    if path.exists():
        with np.load(path) as z:
            return dict(z)
    out: dict[str, list] = {"train": [], "val": [], "sides": []}
    for role in ("train", "val"):
        batch = []
        for case in cases(args, [site], roles=(role,)):
            img, _ = case.load()
            batch.append(img)
            out["sides"].append(img.shape)
            if len(batch) == 32:
                out[role].append(embed(engine, batch))
                batch = []
        if batch:
            out[role].append(embed(engine, batch))
    res = {"train": np.concatenate(out["train"]), "val": np.concatenate(out["val"]), "sides": np.array(out["sides"])}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(path, **res)
    return res


def _to8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, [0.5, 99.5])
    return (255 * np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1)).astype(np.uint8)


def _views(a: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """The whole image and n random crops (20-100 % of the side, any aspect), flipped at random."""
    out = [a]
    h, w = a.shape
    for _ in range(n):
        ch, cw = int(h * rng.uniform(0.2, 1.0)), int(w * rng.uniform(0.2, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        v = a[y:y + ch, x:x + cw]
        out.append(v[:, ::-1] if rng.random() < 0.5 else v)
    return out


def text_page(rng: np.random.Generator) -> np.ndarray:
    """A scanned-looking page of text (a document handed over instead of an image)."""
    from PIL import ImageDraw, ImageFont

    h, w = int(rng.integers(500, 1100)), int(rng.integers(400, 900))
    page = PILImage.new("L", (w, h), int(rng.integers(200, 256)))
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=int(rng.integers(10, 28)))
    words = "patient report findings breast lesion mass margin echo impression date signed clinic".split()
    y = int(rng.integers(10, 60))
    while y < h - 20:
        line = " ".join(rng.choice(words, int(rng.integers(3, 12))))
        draw.text((int(rng.integers(10, 60)), y), line, fill=int(rng.integers(0, 80)), font=font)
        y += int(rng.integers(18, 45))
    a = np.asarray(page, np.float32)
    a = ndimage.gaussian_filter(a, rng.uniform(0, 1.2)) + rng.normal(0, rng.uniform(0, 8), a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


NEAR_MISSES = ("rotated", "upside down", "inverted")


def near_misses(args, site: str, roles: tuple[str, ...], n: int = 120, seed: int = 0) -> dict[str, list]:
    """Ultrasound of the site made wrong: a quarter turn (either way), upside down, inverted."""
    rng = np.random.default_rng(seed)
    todo = cases(args, [site], roles=roles)
    picks = [todo[i] for i in rng.permutation(len(todo))[:n]]
    out: dict[str, list] = {k: [] for k in NEAR_MISSES}
    for c in picks:
        img, _ = c.load()
        out["rotated"].append(np.rot90(img, 1 if rng.random() < 0.5 else 3).copy())
        out["upside down"].append(img[::-1].copy())
        out["inverted"].append(255 - img)
    return out


def negative_families(minimias: Path, seed: int = 0) -> dict[str, list[np.ndarray]]:
    import matplotlib

    rng = np.random.default_rng(seed)
    fam: dict[str, list[np.ndarray]] = {"mammogram": [], "MR": [], "picture": [], "synthetic": [], "document": []}
    films = sorted((minimias / "images").glob("mdb*.png"))
    if not films:
        raise SystemExit(f"no mini-MIAS images in {minimias}/images: run ../shared/data/minimias/prepare.py")
    for f in films[::3]:  # every third film (both sides of the women in the rows kept), whole and one crop
        fam["mammogram"] += _views(np.asarray(PILImage.open(f).convert("L")), rng, 1)
    for _ in range(120):
        fam["document"].append(text_page(rng))
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    mr = np.frombuffer(gzip.open(sample / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
    fam["MR"] += _views(_to8(mr), rng, 60)
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        fam["picture"] += _views(np.asarray(PILImage.open(sample / name).convert("L")), rng, 40)
    for i in range(200):
        h, w = int(rng.integers(300, 700)), int(rng.integers(300, 800))
        kind = i % 5
        if kind == 0:  # white or blurred noise
            a = ndimage.gaussian_filter(rng.random((h, w)), rng.choice([0, 1, 3, 8]))
        elif kind == 1:  # gradient at an angle
            t = rng.uniform(0, np.pi)
            yy, xx = np.indices((h, w))
            a = np.cos(t) * xx + np.sin(t) * yy
        elif kind == 2:  # checkerboard or stripes
            s = int(rng.integers(4, 80))
            yy, xx = np.indices((h, w)) // s
            a = ((yy + xx) % 2) if rng.random() < 0.5 else (xx % 2)
        elif kind == 3:  # bright ellipses on a flat background
            a = np.full((h, w), rng.uniform(0, 0.5))
            yy, xx = np.indices((h, w))
            for _ in range(int(rng.integers(1, 6))):
                cy, cx, ry, rx = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, h / 2), rng.uniform(10, w / 2)
                a[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.uniform(0.3, 1)
        else:  # smooth random field
            a = ndimage.zoom(rng.random((8, 8)), (h / 8, w / 8), order=3)
        fam["synthetic"].append(_to8(a + 1e-3 * rng.random(a.shape)))
    return fam


def fit(pos: np.ndarray, neg: np.ndarray) -> dict[str, np.ndarray]:
    x = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    mean, scale = x.mean(0), x.std(0) + 1e-6
    lr = LogisticRegression(C=C, class_weight="balanced", max_iter=5000).fit((x - mean) / scale, y)
    return {"mean": mean.astype(np.float32), "scale": scale.astype(np.float32),
            "coef": lr.coef_[0].astype(np.float32), "intercept": np.float32(lr.intercept_[0])}


def one_class_record(emb: dict, neg: dict[str, np.ndarray], fit_sites: list[str]) -> dict:
    """The design tried first: PCA (32) Mahalanobis + residual distance to the training images (~1 inside)."""
    def pca_fit(z):
        mean = z.mean(0)
        _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
        comps, eig = vt[:32], (s[:32] ** 2) / (len(z) - 1)
        c = z - mean
        res = float(((c - (c @ comps.T) @ comps) ** 2).sum(1).mean())
        return mean, comps, eig, res

    def dist(m, z):
        mean, comps, eig, res = m
        c = z - mean
        p = c @ comps.T
        return np.sqrt(((p**2 / eig).mean(1) + ((c - p @ comps) ** 2).sum(1) / res) / 2)

    out = {}
    for s in SITES:
        others = [o for o in SITES if o != s]
        m = pca_fit(np.concatenate([emb[o]["train"] for o in others]))
        own = float(np.quantile(np.concatenate([dist(m, emb[o]["val"]) for o in others]), 0.995))
        d = dist(m, np.concatenate([emb[s]["train"], emb[s]["val"]]))
        out[f"{s} unseen"] = {"own_val_q995": own, "unseen_pass_at_it": float((d <= own).mean()),
                              "unseen_q99": float(np.quantile(d, 0.99))}
    m = pca_fit(np.concatenate([emb[s]["train"] for s in fit_sites]))
    out["negatives_max_distance_set_fit"] = {k: float(dist(m, v).max()) for k, v in neg.items()}
    out["negatives_min_distance_set_fit"] = {k: float(dist(m, v).min()) for k, v in neg.items()}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--sites", default="busi,busbra_l5", help="the model set's training sites")
    ap.add_argument("--models", type=Path, default=MODELS_DIR, help="model set folder to write the guard into")
    ap.add_argument("--minimias", type=Path, default=Path("../data/minimias"),
                    help="mini-MIAS folder (../shared/data/minimias/prepare.py): the mammography negatives")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--unseen-quantile", type=float, default=0.01,
                    help="the threshold is at most this quantile of an unseen hospital's P(US)")
    ap.add_argument("--no-near-misses", action="store_true", help="fit without the near-miss negatives")
    args = ap.parse_args()
    t0 = time.time()
    fit_sites = args.sites.split(",")
    engine = embedder("cpu")
    emb = {s: site_embeddings(engine, args, s) for s in SITES}
    negs = {k: embed(engine, v) for k, v in negative_families(args.minimias).items()}
    base_neg = np.concatenate(list(negs.values()))
    # near misses: from each site's train split (fitting), and its val split (scoring when the site is unseen)
    near_fit = {s: {k: embed(engine, v) for k, v in near_misses(args, s, ("train",)).items()} for s in SITES}
    near_val = {s: {k: embed(engine, v) for k, v in near_misses(args, s, ("val",), seed=1).items()} for s in SITES}

    def negatives(sites: list[str], leave: str | None = None) -> np.ndarray:
        near = [] if args.no_near_misses else [v for s in sites for v in near_fit[s].values()]
        return np.concatenate([base_neg if leave is None else np.concatenate(
            [v for k, v in negs.items() if k != leave])] + near)

    # leave-site-out: each site unseen by a model fitted without it (and without its near misses)
    candidates, unseen, unseen_near = {}, {}, {}
    for s in SITES:
        others = [o for o in SITES if o != s]
        m = fit(np.concatenate([emb[o]["train"] for o in others]), negatives(others))
        p = ultrasound_probability(np.concatenate([emb[s]["train"], emb[s]["val"]]), m)
        candidates[f"{s} unseen q{100 * args.unseen_quantile:g}"] = float(np.quantile(p, args.unseen_quantile))
        unseen[s] = p
        unseen_near[s] = {k: ultrasound_probability(v, m) for k, v in near_val[s].items()}
    model = fit(np.concatenate([emb[s]["train"] for s in fit_sites]), negatives(fit_sites))
    own_val = ultrasound_probability(np.concatenate([emb[s]["val"] for s in fit_sites]), model)
    candidates["own val q0.5"] = float(np.quantile(own_val, 0.005))
    if len(fit_sites) == 1:  # the fit site is not unseen by its own model
        candidates.pop(f"{fit_sites[0]} unseen q{100 * args.unseen_quantile:g}")
    threshold = min(candidates.values())
    unseen_pass = {f"{s} (model without it)": float((p >= threshold).mean()) for s, p in unseen.items()}
    unseen_near_refusal = {s: {k: float((p < threshold).mean()) for k, p in v.items()}
                           for s, v in unseen_near.items()}
    # negatives: each family refused by a model fitted without it
    family_refusal = {}
    for fam in negs:
        m = fit(np.concatenate([emb[s]["train"] for s in fit_sites]), negatives(fit_sites, leave=fam))
        family_refusal[fam] = float((ultrasound_probability(negs[fam], m) < threshold).mean())
    seen_refusal = {k: float((ultrasound_probability(v, model) < threshold).mean()) for k, v in negs.items()}
    own_near = {k: float((ultrasound_probability(np.concatenate([near_val[s][k] for s in fit_sites]), model)
                          < threshold).mean()) for k in NEAR_MISSES}
    sides = np.concatenate([emb[s]["sides"] for s in fit_sites])
    spec = {"modalities": ["US", "OT"], "max_frames": 1,
            "min_side": int(np.floor(0.5 * sides.min())), "max_side": int(np.ceil(2.5 * sides.max()))}

    args.models.mkdir(parents=True, exist_ok=True)
    npz = args.models / f"{GUARD_ID}.npz"
    np.savez(npz, **model)
    card = {
        "id": GUARD_ID, "weights": npz.name, "sha256": sha256_of(npz), "task": "input guard: is this breast US?",
        "threshold": round(threshold, 5), "validated_on": spec,
        "embedding": "frozen ImageNet EfficientNet-Lite0, whole image at 224x224, pooled 1280, L2-normalised",
        "model": f"L2 logistic regression (C={C}, balanced), ultrasound vs non-ultrasound",
        "fit": {"sites": fit_sites, "data_citations": citations(fit_sites), "split": "train",
                "ultrasound_images": int(sum(len(emb[s]["train"]) for s in fit_sites)),
                "negative_images": {**{k: len(v) for k, v in negs.items()},
                                    **{f"{k} ultrasound": sum(len(near_fit[s][k]) for s in fit_sites)
                                       for k in NEAR_MISSES}}},
        "threshold_rule": "lowest of: the 0.5th percentile of P(US) on the fit's own val images; for each site, the "
                          f"{100 * args.unseen_quantile:g}th percentile of its images under a model fitted without it "
                          "(leave-site-out)",
        "threshold_candidates": {k: round(v, 5) for k, v in candidates.items()},
        "size_rule": "sides between half the smallest and 2.5x the largest training image side",
        "training": {"command": f"python -m training.fit_guard --sites {args.sites}"
                     + (f" --models {args.models}" if args.models != MODELS_DIR else "")
                     + (f" --unseen-quantile {args.unseen_quantile:g}" if args.unseen_quantile != 0.01 else "")
                     + (" --no-near-misses" if args.no_near_misses else "")},
    }
    name = "input_guard" + ("" if args.models == MODELS_DIR else f"_{args.models.name}")
    card["metrics"] = f"benchmarks/results/{name}.md"
    save_card(args.models, GuardCard.from_json(card))

    from benchmarks.machine import machine

    res = {"date": str(date.today()), "model_set_dir": str(args.models), "fit_sites": fit_sites,
           "threshold": threshold, "candidates": candidates,
           "own_val_pass": float((own_val >= threshold).mean()), "unseen_site_pass": unseen_pass,
           "negative_refusal_family_held_out": family_refusal, "negative_refusal_family_seen": seen_refusal,
           "near_miss_refusal_unseen_site": unseen_near_refusal, "near_miss_refusal_fit_sites_val": own_near,
           "negatives": {k: len(v) for k, v in negs.items()},
           "one_class_design_tried_first": one_class_record(emb, negs, fit_sites),
           "seconds": round(time.time() - t0, 1), "machine": machine()}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{name}.json").write_text(json.dumps(res, indent=1) + "\n")
    oc = res["one_class_design_tried_first"]
    lines = [f"# Input guard, fit on {'+'.join(fit_sites)} ({res['date']})", "",
             f"Machine: {res['machine']['cpu']}, {res['machine']['cores']} cores; {res['seconds']:.0f} s. "
             f"Command: `{card['training']['command']}`", "",
             f"Model: {card['model']} on {card['embedding']}.", "",
             f"Threshold on P(ultrasound): {threshold:.4f} (rule: {card['threshold_rule']}).", "",
             "| candidate | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4f} |" for k, v in candidates.items()]
    lines += ["", "| ultrasound images | pass |", "|---|---|",
              f"| own val ({'+'.join(fit_sites)}) | {100 * res['own_val_pass']:.1f} % |"]
    lines += [f"| {k}, all train+val | {100 * v:.1f} % |" for k, v in unseen_pass.items()]
    lines += ["", "| negative family (images) | refused, family never shown to the model | refused, family seen |",
              "|---|---|---|"]
    lines += [f"| {k} ({len(negs[k])}) | {100 * family_refusal[k]:.1f} % | {100 * seen_refusal[k]:.1f} % |"
              for k in negs]
    lines += ["", "Near misses (the site's own val images made wrong), refused:", "",
              "| site | model | " + " | ".join(NEAR_MISSES) + " |", "|---|---|" + "---|" * len(NEAR_MISSES)]
    lines += [f"| {s} | fitted without it | " + " | ".join(f"{100 * v[k]:.1f} %" for k in NEAR_MISSES) + " |"
              for s, v in unseen_near_refusal.items()]
    lines += [f"| {'+'.join(fit_sites)} | the shipped fit | " + " | ".join(f"{100 * own_near[k]:.1f} %"
                                                                        for k in NEAR_MISSES) + " |"]
    lines += ["", "## The design tried first: one-class distance (for the record)", "",
              "PCA (32 components) Mahalanobis + residual distance to the training images' embeddings (about 1 "
              "for training images). A threshold chosen on the fit's own images (q99.5 of its val) against the "
              "images of the hospital it has never seen:", "",
              "| unseen site | own-val q99.5 | unseen passing it | unseen q99 |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['own_val_q995']:.2f} | {100 * v['unseen_pass_at_it']:.1f} % | {v['unseen_q99']:.2f} |"
              for k, v in oc.items() if k.endswith("unseen")]
    lines += ["", "Under the set's own fit the negatives lie at distances "
              + ", ".join(f"{k} {oc['negatives_min_distance_set_fit'][k]:.2f}-"
                          f"{oc['negatives_max_distance_set_fit'][k]:.2f}" for k in negs)
              + ": a new hospital's ultrasound (up to ~3.3 in the leave-site-out rows) is further from the "
              "training images than a mammogram or noise, so no distance threshold can pass the one and refuse "
              "the other. Hence the discriminative model above."]
    (args.results / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
