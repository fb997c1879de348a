"""BI-RADS ultrasound lexicon categories (ACR atlas, 5th edition) from the measured descriptors.

Each category comes with the quantity behind it and a confidence (how far the value lies from the cut-point, in
units of that quantity's spread in the training data). Cut-points that the lexicon defines are used as defined
(orientation: not parallel when the lesion is deeper than wide); the others were chosen on the training split of
both hospitals and are read from Resources/Lexicon/thresholds.json (training/lexicon_thresholds.py, validated
in benchmarks/results/lexicon.md against the published predictive values of the lexicon).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path

THRESHOLDS = Path(__file__).resolve().parents[2] / "Resources" / "Lexicon" / "thresholds.json"
ROUND_BAND = 1.2  # depth/width within 1/1.2..1.2 and regular: round (circular); beyond: oval


@dataclass(frozen=True)
class LexiconItem:
    feature: str  # shape, orientation, margin, echo pattern, posterior features, size, depth
    category: str
    evidence: str  # the measured quantity behind it
    confidence: str  # high | moderate | low

    def to_json(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=1)
def thresholds() -> dict:
    return json.loads(THRESHOLDS.read_text())


def _confidence(value: float, cut: float, spread: float) -> str:
    z = abs(value - cut) / max(spread, 1e-9)
    return "high" if z >= 1.0 else "moderate" if z >= 0.4 else "low"


LEVELS = ("low", "moderate", "high")


def _lowest(levels: list[str]) -> str:
    return min(levels, key=LEVELS.index)


def _highest(levels: list[str]) -> str:
    return max(levels, key=LEVELS.index)


def _banded(value: float, cuts: tuple[float, float], spread: float, names: tuple[str, str, str]
            ) -> tuple[str, str]:
    """Below cuts[0], between, above cuts[1] -> one of names, with the confidence of the nearest cut."""
    lo, hi = cuts
    if value < lo:
        return names[0], _confidence(value, lo, spread)
    if value > hi:
        return names[2], _confidence(value, hi, spread)
    return names[1], _lowest([_confidence(value, lo, spread), _confidence(value, hi, spread)])


def categories(d: dict[str, float], measurements: dict | None = None, t: dict | None = None) -> list[LexiconItem]:
    """Lexicon categories of one lesion from its descriptors (names as in descriptors.NAMES)."""
    t = t or thresholds()
    cut, spread = t["cut"], t["spread"]
    out = []
    ori = d["orientation"]
    out.append(LexiconItem(
        "orientation", "not parallel" if ori > 1.0 else "parallel",
        f"depth/width {ori:.2f} (not parallel when > 1: deeper than wide)",
        _confidence(ori, 1.0, spread["orientation"])))
    sol, rough, sharp = d["solidity"], d["margin_roughness"], d["margin_sharpness"]
    if sol < cut["solidity"]:
        shape = ("irregular", f"solidity {sol:.3f} < {cut['solidity']:.3f}",
                 _confidence(sol, cut["solidity"], spread["solidity"]))
    else:
        r = max(ori, 1 / max(ori, 1e-6))
        shape = ("round" if r <= ROUND_BAND else "oval",
                 f"solidity {sol:.3f} >= {cut['solidity']:.3f}; axis ratio {r:.2f} (round up to {ROUND_BAND})",
                 _confidence(sol, cut["solidity"], spread["solidity"]))
    out.append(LexiconItem("shape", *shape))
    rough_out, blurred = bool(rough > cut["margin_roughness"]), bool(sharp < cut["margin_sharpness"])
    kinds = [k for k, on in (("indistinct", blurred), ("angular, microlobulated or spiculated contour", rough_out))
             if on]
    c_rough = _confidence(rough, cut["margin_roughness"], spread["margin_roughness"])
    c_sharp = _confidence(sharp, cut["margin_sharpness"], spread["margin_sharpness"])
    # circumscribed needs both inside their cut (the weaker decides); not circumscribed, either outside
    margin_conf = _highest([c_rough] * rough_out + [c_sharp] * blurred) if kinds else _lowest([c_rough, c_sharp])
    out.append(LexiconItem(
        "margin", f"not circumscribed: {'; '.join(kinds)}" if kinds else "circumscribed",
        f"contour roughness {rough:.3f} (cut {cut['margin_roughness']:.3f}), edge sharpness {sharp:.2f} "
        f"(cut {cut['margin_sharpness']:.2f})", margin_conf))
    con, het = d["echo_contrast"], d["echo_heterogeneity"]
    if het > cut["echo_heterogeneity"]:
        echo = "heterogeneous"
        conf = _confidence(het, cut["echo_heterogeneity"], spread["echo_heterogeneity"])
    elif con < cut["anechoic"]:
        echo, conf = "anechoic", _confidence(con, cut["anechoic"], spread["echo_contrast"])
    else:
        echo, conf = _banded(con, (cut["hypoechoic"], cut["hyperechoic"]), spread["echo_contrast"],
                             ("hypoechoic", "isoechoic", "hyperechoic"))
    out.append(LexiconItem(
        "echo pattern", echo, f"lesion vs surrounding tissue {con:+.2f} tissue spreads, heterogeneity {het:.2f}", conf))
    post = d["posterior_ratio"]
    p, conf = _banded(post, (cut["shadowing"], cut["enhancement"]), spread["posterior_ratio"],
                      ("shadowing", "no posterior features", "enhancement"))
    out.append(LexiconItem("posterior features", p, f"below the lesion / beside it {post:.2f}", conf))
    m = measurements or {}
    if "longest_diameter" in m:
        out.append(LexiconItem("size", f"{m['longest_diameter']:.1f} {m['unit']}",
                               "longest diameter" + ("" if m["unit"] == "mm" else " (image not calibrated)"), "high"))
    out.append(LexiconItem("depth", f"{100 * d['depth_fraction']:.0f} % of the image depth",
                           "lesion centre below the skin line (top of the image)", "high"))
    return out


# held out, on automatic outlines overlapping the reader's at Dice >= 0.8, shape and margin took the drawn
# outline's category for only 31-77 % of lesions (training/segmentation/EXPERIMENTS.md, "its margin")
OUTLINE_READ = ("shape", "margin")
AUTOMATIC_NOTE = ("read from the automatic outline, smoother than a reader's tracing (the shipped design, at hospitals "
                  "it never saw: this category matched the reader's outline for 31-77 % of lesions); correct the "
                  "outline to read it")


def from_automatic_outline(items: list[LexiconItem]) -> list[LexiconItem]:
    """The categories read from the segmenter's own outline: shape and margin at low confidence, saying why."""
    return [replace(i, evidence=f"{i.evidence}; {AUTOMATIC_NOTE}", confidence="low") if i.feature in OUTLINE_READ
            else i for i in items]


def suspicious_signs(items: list[LexiconItem]) -> list[str]:
    """The lexicon's suspicious signs that together call for at least 4A: an irregular shape with a not
    circumscribed margin (benchmarks/results/lexicon_floor.md: the pair that flags low-scored cancers at hospitals
    the set never saw with the fewest benign lesions)."""
    by = {i.feature: i for i in items}
    shape, margin = by.get("shape"), by.get("margin")
    if shape is None or margin is None or shape.category != "irregular" or margin.category == "circumscribed":
        return []
    return [f"shape {shape.category}", f"margin {margin.category}"]


__all__ = ["AUTOMATIC_NOTE", "LexiconItem", "categories", "from_automatic_outline", "suspicious_signs",
           "thresholds"]
