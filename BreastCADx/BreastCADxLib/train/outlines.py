"""The automatic-outline stage of `breastcadx train`: the panel's default path, judged and fitted.

The product classifies most findings from its own segmenter's outline (lesion expected), not from a reference
outline, and a new hospital's figures are those of that path. Here each finding is outlined as the product
outlines it (`LesionSegmenter.segment`, lesion expected, at the set's presence threshold) by a segmenter that
never saw its image: the segmenter fold that held its patient (or site) out, or, with --from and no segmenter
training, the source set's segmenter. On these outlines:

- the held-out figures of the automatic path: the classifier fold's fusion (fitted on reference outlines) scores
  each held-out finding from its automatic outline; with the image members, the box member scores that outline's
  box (the whole-image member needs no outline: its held-out scores carry over);
- a second fusion, fitted on the training findings' reference and automatic outlines together (the shipped sets'
  `lesion_cls_fusion_auto`: the segmenter's outlines are smoother and err in their own way), judged the same way;
  it goes into the set as the bundle for the segmenter's own masks (the card's `automatic_masks`) when, out of
  fold, it passes the train gate (pipeline.no_worse) against the reference-fitted fusion on the automatic outlines.

A training finding's automatic outline comes from a segmenter fold that held its image out, but that segmenter may
have trained on the images of the classifier fold being scored: it saw their outlines, never their labels.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.registry import sha256_of

AUTO_ID = "lesion_cls_fusion_auto"


def cached_outline(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One automatic outline as the outline passes cache it (np.packbits of the plane's mask) on its plane."""
    return np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)


def cached_passes(work: Path) -> dict[str, np.ndarray]:
    """Every automatic outline a run's outline passes cached (work/auto_outlines/pass*.npz): {image: packed}."""
    out = {}
    for path in sorted((work / "auto_outlines").glob("pass*.npz")):
        with np.load(path, allow_pickle=False) as z:
            out.update({str(k): z[f"m{i}"] for i, k in enumerate(z["images"])})
    return out


def read_feature_cache(path: Path) -> tuple[str, dict | None]:
    """One finding's cached automatic-outline features (outline_features): (its digest, the row or None where the
    product cannot classify that outline)."""
    with np.load(path, allow_pickle=False) as z:
        row = {"names": list(z["names"]), "rad": z["rad"], "deep": z["deep"], "dice": float(z["dice"])} \
            if z["ok"] else None
        return str(z["digest"]), row


def cached_features(work: Path, findings: list) -> dict[str, dict | None]:
    """Every finding's cached automatic-outline features of a run's work folder, as outline_features returns them."""
    return {f.case_id: read_feature_cache(work / "auto_features" / f"{f.case_id}.npz")[1] for f in findings}


def feature_arrays(feats: dict[str, dict | None], findings: list, n_rad: int, n_deep: int) -> tuple:
    """(rad, deep, usable, dice) arrays over the findings from outline_features' rows; an outline the product
    cannot classify has zero features and Dice 0."""
    rows = [feats[f.case_id] for f in findings]
    return (np.array([r["rad"] if r else np.zeros(n_rad) for r in rows]),
            np.array([r["deep"] if r else np.zeros(n_deep) for r in rows]),
            np.array([r is not None for r in rows]), np.array([r["dice"] if r else 0.0 for r in rows]))


def outline_passes(findings: list, detector: dict, seg_images: list | None, work: Path, device: str,
                   deadline: float, say) -> dict[str, np.ndarray]:
    """Each finding image's automatic outline (lesion expected) on the working grid, by a segmenter that never saw
    it; cached per segmenter in work/auto_outlines/ (a rerun with the same weights reuses them)."""
    from BreastCADxLib.image import Image
    from BreastCADxLib.train import segmenter as seg

    wanted = {str(f.image) for f in findings}
    if detector.get("carried") is not None:  # --from, no segmenter training: the source's saw none of these
        card = detector["carried"]
        passes = [(card, card.weights_path, sorted(wanted))]
    else:
        card = seg.card_for(detector["size"], detector["post"], detector["folds"][0]["weights"], "", {"command": ""},
                            "")
        passes = [(card, Path(k["weights"]), [i for i in k["held_out"] if i in wanted]) for k in detector["folds"]]
    if seg_images is None:
        seg_images = seg.seg_images(findings, [])
    planes = {im.key: im.plane for im in seg_images}
    folder = work / "auto_outlines"
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    for k, (card, weights, keys) in enumerate(passes):
        digest = hashlib.sha256(json.dumps([sha256_of(weights), card.postprocessing, keys]).encode()).hexdigest()
        cache = folder / f"pass{k + 1}.npz"
        if cache.is_file():
            with np.load(cache, allow_pickle=False) as z:
                if str(z["digest"]) == digest:
                    out.update({key: cached_outline(z[f"m{i}"], planes[key].shape) for i, key in enumerate(keys)})
                    continue
        if time.time() > deadline:
            raise _time_box(work, f"segmenter {k + 1} of {len(passes)}")
        net = seg.segmenter(card, weights, device)
        masks = {}
        for i, key in enumerate(keys):
            masks[key] = net.segment(Image(array=planes[key][None]), expect_lesion=True).mask[0]
            if (i + 1) % 50 == 0:
                say(f"automatic outlines {k + 1}/{len(passes)}: {i + 1}/{len(keys)} images")
        np.savez_compressed(cache, digest=digest, images=np.array(keys, dtype=str),
                            **{f"m{i}": np.packbits(masks[key]) for i, key in enumerate(keys)})
        out.update(masks)
    return out


def _time_box(work: Path, where: str):
    from BreastCADxLib.train.pipeline import TrainError

    return TrainError(f"--max-minutes reached in the automatic-outline stage ({where}; run the same command again "
                      "to go on)", work)


def outline_features(findings: list, outlines: dict[str, np.ndarray], work: Path, device: str, descriptors: bool,
                     deadline: float, say) -> dict[str, dict | None]:
    """The features `analyze` computes from each finding's automatic outline (None where it cannot classify it:
    an empty or unusable outline), cached per finding."""
    from BreastCADxLib.analysis.deep_features import get_deep_features
    from BreastCADxLib.errors import MaskError
    from BreastCADxLib.results.evaluation import dice
    from BreastCADxLib.train.pipeline import _digest, feature_row, on_grid

    folder = work / "auto_features"
    folder.mkdir(parents=True, exist_ok=True)
    deep_model = get_deep_features(device, "mask")
    rows: dict[str, dict | None] = {}
    t0, done = time.perf_counter(), 0
    for i, f in enumerate(findings):
        plane = outlines[str(f.image)]
        digest = hashlib.sha256((_digest(f, descriptors) + hashlib.sha256(np.packbits(plane)).hexdigest()).encode()
                                ).hexdigest()
        cache = folder / f"{f.case_id}.npz"
        if cache.is_file():
            cached, row = read_feature_cache(cache)
            if cached == digest:
                rows[f.case_id] = row
                continue
        if time.time() > deadline:
            raise _time_box(work, f"features of {i} of {len(findings)} findings done")
        image, ref = on_grid(f)
        mask = plane[None]
        overlap = dice(mask, ref)
        try:
            row = {**feature_row(image, mask, deep_model, descriptors), "dice": overlap} if mask.any() else None
        except (MaskError, ValueError):
            row = None
        if row is None:
            np.savez(cache, digest=digest, ok=False)
        else:
            np.savez(cache, digest=digest, ok=True, names=np.array(row["names"]), rad=row["rad"], deep=row["deep"],
                     dice=overlap)
        rows[f.case_id] = row
        done += 1
        if done % 50 == 0:
            left = (time.perf_counter() - t0) / done * (len(findings) - i - 1)
            say(f"automatic outlines: features {i + 1}/{len(findings)}, about {left / 60:.0f} min left")
    return rows


def member_scores(findings: list, outlines: dict[str, np.ndarray], splits: list, work: Path, device: str
                  ) -> np.ndarray:
    """Out of fold: each classifier fold's box member scoring its held-out findings from their automatic outlines'
    boxes (NaN where the outline is empty); cached per fold."""
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.train import members as mem

    dev = choose_device(device)
    out = np.full(len(findings), np.nan)
    images = None
    for k, (_, te) in enumerate(splits):
        folder = work / f"member_box_fold{k + 1}"
        weights = folder / "model.pt"
        cache = folder / "scored_auto.json"
        keys = [findings[i].case_id for i in te]
        digest = hashlib.sha256(json.dumps([sha256_of(weights)] + [hashlib.sha256(np.packbits(
            outlines[str(findings[i].image)])).hexdigest() for i in te]).encode()).hexdigest()
        if cache.is_file() and (got := json.loads(cache.read_text())).get("digest") == digest:
            out[te] = [got["scores"][key] if got["scores"][key] is not None else np.nan for key in keys]
            continue
        if images is None:
            images = mem.member_images(findings)
        todo = [i for i in te if outlines[str(findings[i].image)].any()]
        auto = [mem.MemberImage(images[i].key, images[i].plane, outlines[str(findings[i].image)], images[i].label,
                                images[i].patient) for i in todo]
        p = mem.score("box", weights, auto, dev) if auto else np.array([])
        scores = dict.fromkeys(keys)
        scores.update({findings[i].case_id: float(q) for i, q in zip(todo, p)})
        cache.write_text(json.dumps({"digest": digest, "scores": scores}))
        out[te] = [scores[key] if scores[key] is not None else np.nan for key in keys]
    return out


def with_automatic(rad, deep, y, arad, adeep, ok, idx, redrawn: tuple | None = None) -> tuple:
    """The fitting rows of findings `idx` (pipeline.fit_rows) and those of their automatic outlines that can be
    classified (`ok`): what the bundle for the segmenter's own masks is fitted on."""
    from BreastCADxLib.train.pipeline import fit_rows

    r, d, t = fit_rows(rad, deep, y, idx, redrawn)
    both = idx[ok[idx]]
    return np.vstack([r, arad[both]]), np.vstack([d, adeep[both]]), np.r_[t, y[both]]


def automatic_oof(rad, deep, y, arad, adeep, ok, splits, c: float, source: dict | None = None,
                  redrawn: tuple | None = None) -> dict[str, np.ndarray]:
    """Out of fold on the automatic outlines: the fusion fitted on the findings' own outlines ("reference_fit") and
    the one fitted on both ("both_fit"); an outline the product cannot classify is ranked undecided (0.5)."""
    from BreastCADxLib.train.pipeline import _fusion_proba, fit_fusion, fit_rows

    oof = {"reference_fit": np.full(len(y), 0.5), "both_fit": np.full(len(y), 0.5)}
    for tr, te in splits:
        ref_fit = fit_fusion(fit_rows(rad, deep, y, tr, redrawn), c, source)
        both_fit = fit_fusion(with_automatic(rad, deep, y, arad, adeep, ok, tr, redrawn), c, source)
        scored = te[ok[te]]
        oof["reference_fit"][scored] = _fusion_proba(ref_fit, arad[scored], adeep[scored])
        oof["both_fit"][scored] = _fusion_proba(both_fit, arad[scored], adeep[scored])
    return oof


def automatic_stage(findings: list, y: np.ndarray, groups: np.ndarray, rad: np.ndarray, deep: np.ndarray,
                    detector: dict, members: dict | None, work: Path, *, folds, sites, c: float, descriptors: bool,
                    source: dict | None, seg_images: list | None, device: str, deadline: float, say,
                    redrawn: tuple | None = None) -> dict:
    """The automatic path out of fold (the reference-fitted fusion and the fusion fitted on both outlines, with the
    image members when the set has them), per site with --folds site; and the rows the set's automatic-outline
    bundle is fitted on when it is kept (with `redrawn`, every fit takes the redrawn outlines too: pipeline.fit_rows).
    Returns the record for cv.json and card.md, and `rows` (rad, deep, y)."""
    from BreastCADxLib.train import members as mem
    from BreastCADxLib.train.pipeline import GATE_RULE, SITE_FOLDS, fold_splits, no_worse, summary

    outlines = outline_passes(findings, detector, seg_images, work, device, deadline, say)
    feats = outline_features(findings, outlines, work, device, descriptors, deadline, say)
    arad, adeep, ok, dice = feature_arrays(feats, findings, rad.shape[1], deep.shape[1])
    splits = fold_splits(y, groups, folds, sites=sites)
    oof = automatic_oof(rad, deep, y, arad, adeep, ok, splits, c, source, redrawn)
    models = {k: summary(y, p, groups) for k, p in oof.items()}
    site_gate = sites if folds == SITE_FOLDS else None
    kept, gate = no_worse(y, oof["both_fit"], oof["reference_fit"], site_gate, groups)
    chosen = "both_fit" if kept else "reference_fit"
    views = list((members or {}).get("views") or ())
    members_kept, member_gate, member_weights, probs = False, None, None, {}
    if views:  # the fold members on the same outlines: the box member on their boxes, the whole member as it was
        if "box" in views:
            box = member_scores(findings, outlines, splits, work, device)
            probs["box"] = np.where(np.isnan(box), 0.5, box)
        if "whole" in views:
            probs["whole"] = np.asarray(members["oof"]["whole"])
        members_kept, member_weights, member_gate, oof[f"{chosen}_with_members"] = mem.choose_weights(
            y, oof[chosen], probs, site_gate, groups)
        models[f"{chosen}_with_members"] = summary(y, oof[f"{chosen}_with_members"], groups)
    record = {"outlines": "the product's path, lesion expected, at the set's presence threshold, by a segmenter "
                          "that never saw the image" + (" (the source set's)" if detector.get("carried") else
                                                        " (the segmenter fold that held it out)"),
              "members": views, "findings": int(len(y)), "unclassifiable": int((~ok).sum()),
              "dice_mean": float(dice.mean()), "dice_below_0.1": float(np.mean(dice < 0.1)),
              "models": models, "kept": bool(kept), "members_kept": members_kept, "gate": gate,
              "members_gate": member_gate, "member_weights": member_weights,
              "rule": "the fusion fitted on reference and automatic outlines is the bundle for the segmenter's own "
                      "masks against the reference-fitted fusion on the automatic outlines, and the image members "
                      f"join it against it without them: {GATE_RULE}",
              # per finding (cv.json's case_ids order): what later studies of the automatic path start from
              "oof": {**{k: v.tolist() for k, v in oof.items()},
                      **{f"{view}_member": v.tolist() for view, v in probs.items()},
                      "dice": dice.tolist(), "classifiable": ok.tolist()}}
    if folds == SITE_FOLDS:
        s = np.asarray(sites)
        record["by_site"] = {site: {"dice_mean": float(dice[s == site].mean()),
                                    **{k: summary(y[s == site], p[s == site], groups[s == site])
                                       for k, p in oof.items()}} for site in sorted(set(s))}
    a, b = models["reference_fit"], models["both_fit"]
    say(f"automatic outlines out of fold (mean Dice {dice.mean():.2f}): fusion fitted on both outlines AUC "
        f"{b['auc']:.3f} against {a['auc']:.3f} fitted on reference outlines: "
        + ("kept for the segmenter's own masks" if kept else "not kept (reference-fitted features for them)")
        + (f"; with the image members {models[f'{chosen}_with_members']['auc']:.3f}: "
           + ("fused" if members_kept else "not fused") if views else ""))
    rows = with_automatic(rad, deep, y, arad, adeep, ok, np.arange(len(y)), redrawn) if kept else None
    return {"record": record, "rows": rows}


def automatic_text(r: dict) -> str:
    """card.md's section on the automatic path."""
    from BreastCADxLib.train.members import chance_text
    from BreastCADxLib.train.pipeline import METRIC_HEAD, metric_cells

    base = {"reference_fit": "fusion fitted on reference outlines", "both_fit": "fusion fitted on both outlines"}
    name = {**base, **{f"{k}_with_members": f"{v}, with the image members ({', '.join(r['members'])})"
                       for k, v in base.items()}}
    lines = [f"Automatic outlines (the panel's default: {r['outlines']}), out of fold: mean Dice to the "
             f"reference {r['dice_mean']:.2f}, {r['dice_below_0.1']:.0%} of the findings below 0.1, "
             f"{r['unclassifiable']} outline(s) that cannot be classified (ranked 0.5).", "",
             f"| classifier of the automatic outline | {METRIC_HEAD} |", "|---|---|---|---|"]
    for k, m in r["models"].items():
        lines.append(f"| {name[k]} | {metric_cells(m)} |")
    for site, m in (r.get("by_site") or {}).items():
        lines.append(f"- held-out site {site} (mean Dice {m['dice_mean']:.2f}): " + "; ".join(
            f"{name[k]} AUC {m[k]['auc']:.3f}, specificity at 0.96 {m[k]['specificity_at_0.96']:.2f}"
            for k in r["models"]))
    features = "the fusion fitted on both outlines" if r["kept"] else "the reference-fitted fusion"
    members = (" with the image members" if r["members_kept"] else " without the image members") if r["members"] \
        else ""
    lines += ["", f"The segmenter's own masks are classified by {features}{members} ({r['rule']})."
              + chance_text((r.get("members_gate") or {}).get("at_chance"), " on these outlines")]
    return "\n".join(lines)


__all__ = ["AUTO_ID", "automatic_stage", "automatic_oof", "with_automatic", "automatic_text", "outline_passes",
           "cached_outline", "cached_passes", "cached_features", "feature_arrays", "read_feature_cache",
           "outline_features", "member_scores"]
