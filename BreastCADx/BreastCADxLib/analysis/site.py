"""A site profile: what a hospital's own labelled cases taught BreastCADx, applied to each new case.

`breastcadx adapt` (results.adapt) writes it: a folder with site.json (and a readable card), every file listed
with its SHA256 and site.json sealed by the SHA256 of its own content. It holds, each only when the site's cases
were enough to fit it: a calibration of the fused probability per mask origin, the lesion-presence threshold,
the biopsy threshold at the sensitivity the site chose, and the rule that combines the radiologist's BI-RADS
with BreastCADx's score. It is made for one model set (id + manifest SHA256) and refused with any other.
Torch-free: the Slicer panel reads it before the heavy packages are installed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.calibration import apply_calibration, birads_suggestion, logit
from BreastCADxLib.errors import BreastCADxError

SITE_FILE = "site.json"
SITE_SCHEMA = "breastcadx-site/1"
# the radiologist's category on one ordinal scale (4 without a subcategory sits between 4A and 4B)
READER_LEVELS = {"1": 1.0, "2": 2.0, "3": 3.0, "4A": 4.0, "4": 4.33, "4B": 4.33, "4C": 4.67, "5": 5.0}
READER_BIOPSY_LEVEL = 4.0  # BI-RADS 4A or above: the reader's own biopsy recommendation


class SiteProfileError(BreastCADxError):
    """A site profile that is missing, altered, or made for another model set."""

    code = "site_profile_invalid"


def reader_category(category: str, source: str | Path | None = None) -> str:
    """The radiologist's BI-RADS category as written here (1-5, 4A-4C; "BI-RADS 4a" reads as 4A); anything else,
    0 and 6 included, is refused."""
    key = str(category).strip().upper().removeprefix("BI-RADS").strip()
    if key not in READER_LEVELS:
        raise BreastCADxError(f"BI-RADS category {str(category)[:12]!r} is not one of "
                              f"{', '.join(READER_LEVELS)} (0 and 6 are not assessments of a lesion)", source)
    return key


def reader_level(category: str, source: str | Path | None = None) -> float:
    """The radiologist's category on the ordinal scale READER_LEVELS."""
    return READER_LEVELS[reader_category(category, source)]


def calibration_for(calibrations: dict, mask_origin: str) -> dict | None:
    """The calibration a profile applies to an outline of this origin: the one fitted on that origin (an edited
    outline counts as drawn), else the other origin's, else None (no calibration)."""
    key = "user" if mask_origin in ("user", "edited") else "auto"
    return calibrations.get(key) or calibrations.get("auto" if key == "user" else "user")


def combined(rule: dict, level, p) -> np.ndarray:
    """The reader rule's probability from the reader's level(s) and BreastCADx's probability(ies)."""
    z = rule["coef_reader"] * np.asarray(level, float) + rule["coef_logit"] * logit(p) + rule["intercept"]
    return 1.0 / (1.0 + np.exp(-z))


def content_sha256(body: dict) -> str:
    """SHA256 of a profile's canonical JSON without its seal."""
    data = {k: v for k, v in body.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class ReaderView:
    """The radiologist's category beside BreastCADx's, and whether the site's rule says they disagree."""

    category: str
    combined_probability: float | None  # the site's rule on (reader, BreastCADx); None without a rule
    disagreement: str | None  # one sentence where the rule's decision differs from the reader's; else None

    def to_json(self) -> dict:
        return {"category": self.category, "combined_probability": self.combined_probability,
                "disagreement": self.disagreement}


@dataclass(frozen=True)
class SiteProfile:
    id: str
    sha256: str  # the seal: SHA256 of site.json's content
    folder: Path
    body: dict

    @property
    def model_set(self) -> str:
        return self.body["model_set"]["id"]

    @property
    def presence(self) -> float | None:
        return (self.body.get("presence") or {}).get("threshold")

    @property
    def biopsy_threshold(self) -> float | None:
        return (self.body.get("biopsy") or {}).get("threshold")

    def calibrate(self, p: float, mask_origin: str) -> float:
        """The site's probability from the set's: the calibration fitted on masks of this origin (an edited
        outline counts as drawn), else the other origin's, else p unchanged."""
        cal = calibration_for(self.body.get("calibration") or {}, mask_origin)
        return float(apply_calibration(cal["fit"], [p])[0]) if cal else float(p)

    def suggestion(self, p: float) -> tuple[str, str | None]:
        """The category from the site's probability; where the site set a biopsy threshold, the boundary between
        3 and 4A is that threshold (only those two categories move). Returns (category, note or None)."""
        category, t = birads_suggestion(p), self.biopsy_threshold
        if t is None:
            return category, None
        target = self.body["biopsy"]["sensitivity"]
        if p >= t and category in ("2", "3"):
            category = "4A"
        elif p < t and category == "4A":
            category = "3"
        side = "at or above" if p >= t else "below"
        return category, (f"{side} this site's biopsy threshold {100 * t:.1f} % (chosen for sensitivity "
                          f"{target:.2f} on {self.body['cases']['lesions']} of its own lesions)")

    def reader_view(self, category: str, p: float) -> ReaderView:
        """The radiologist's category against the site's combination rule (when the profile has one)."""
        category = reader_category(category)
        level = READER_LEVELS[category]
        rule = self.body.get("reader_rule")
        if not rule:
            return ReaderView(category, None, None)
        both = float(combined(rule, level, p))
        reader_biopsy, rule_biopsy = level >= READER_BIOPSY_LEVEL, both >= rule["threshold"]
        note = None
        if reader_biopsy and not rule_biopsy:
            note = (f"the radiologist says {category}; BreastCADx {100 * p:.1f} %: with this site's rule the "
                    "combination falls below its biopsy threshold: consider short-interval follow-up")
        elif rule_biopsy and not reader_biopsy:
            note = (f"the radiologist says {category}; BreastCADx {100 * p:.1f} %: with this site's rule the "
                    "combination reaches its biopsy threshold: consider biopsy")
        return ReaderView(category, both, note)


def carried_model_set(folder: str | Path) -> Path | None:
    """The fine-tuned model set a profile carries (`adapt --fine-tune`, kept), to be used with it; None when it
    carries none or is not a readable profile (load_site_profile verifies it, and the set, before either is used)."""
    try:
        body = json.loads((Path(folder) / SITE_FILE).read_text(encoding="utf-8"))
        tuned = body.get("fine_tune") or {}
        name = tuned.get("model_set_folder") if tuned.get("kept") else None
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return Path(folder) / name if isinstance(name, str) and Path(name).name == name else None


def load_site_profile(folder: str | Path, model_set: str | None = None) -> SiteProfile:
    """Read and verify a profile: its seal, every listed file's SHA256, and (given) the model set it adapts, whose
    current manifest must be the one it was made for."""
    folder = Path(folder)
    path = folder / SITE_FILE
    if not path.is_file():
        raise SiteProfileError(f"not a site profile (no {SITE_FILE}; `breastcadx adapt` makes one)", folder)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SiteProfileError(f"cannot be read ({e.__class__.__name__})", path) from None
    if not isinstance(body, dict) or body.get("schema") != SITE_SCHEMA:
        raise SiteProfileError(f"not a {SITE_SCHEMA} profile", path)
    if body.get("content_sha256") != content_sha256(body):
        raise SiteProfileError("the profile was changed after `breastcadx adapt` wrote it (its SHA256 seal does "
                               "not match); make it again", path)
    from BreastCADxLib.analysis.registry import sha256_of

    for name, digest in body.get("files", {}).items():
        f = folder / name
        if Path(name).name != name or not f.is_file() or f.is_symlink() or sha256_of(f) != digest:
            raise SiteProfileError("a file of the profile is missing or was changed", f)
    if model_set is not None:
        from BreastCADxLib.analysis.registry import model_set_fingerprint

        made_for = body["model_set"]  # the set is its content (the manifest's SHA256), wherever its folder is now
        if made_for["sha256"] != model_set_fingerprint(model_set):
            tuned = (body.get("fine_tune") or {}).get("model_set_folder")
            if tuned:  # it carries its own set: say which
                raise SiteProfileError(f"carries its own fine-tuned model set '{made_for['id']}': pass "
                                       f"--model-set {folder / tuned} with it (in the panel and the page: choose "
                                       "that folder as the model set)", path)
            raise SiteProfileError(f"made for the model set '{made_for['id']}' ({made_for['sha256'][:12]}), not "
                                   f"for '{model_set}' as installed: adapt again with this model set", path)
    return SiteProfile(body["id"], body["content_sha256"], folder, body)


__all__ = ["SiteProfile", "SiteProfileError", "ReaderView", "load_site_profile", "carried_model_set", "reader_level",
           "reader_category", "content_sha256", "SITE_FILE", "SITE_SCHEMA", "READER_LEVELS"]
