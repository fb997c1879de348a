"""The result contract: what one analysed case is, for every consumer (case files, DICOM, Slicer, batch).

`AnalysisResult.to_json()` is result.json (schema: Resources/Schemas/result.schema.json, checked in a test; a
feature value that is not finite is written as null, so the file is strict JSON);
`AnalysisResult.from_json()` reads it back. Provenance carries the models actually used and how the mask was made,
in one vocabulary: auto (segmenter output), edited (segmenter output corrected by the user), user (drawn or given).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from BreastCADxLib.analysis.calibration import SUGGESTION_NOTE
from BreastCADxLib.analysis.lexicon import LexiconItem
from BreastCADxLib.analysis.site import ReaderView
from BreastCADxLib.analysis.values import Flag, InputCheck, Prediction
from BreastCADxLib.errors import BreastCADxError

# flags a result derives from its input check and its mask's origin (not stored with the prediction)
DERIVED_FLAGS = ("input_unvalidated", "input_corrected", "orientation_uncertain", "edited_mask")

SCHEMA = "breastcadx-result/3"  # /3: flags are {code, text}; /2 files (flags as text) are still read
READABLE_SCHEMAS = ("breastcadx-result/2", SCHEMA)
EDITED_FLAG = Flag("edited_mask", "edited mask: the automatic outline was corrected by the user before "
                                  "classification")
MASK_ORIGINS = ("auto", "edited", "user")


class ResultFormatError(BreastCADxError):
    """A stored result is not a result.json of this version."""

    code = "result_format"


@dataclass(frozen=True)
class ModelRef:
    id: str
    sha256: str

    @classmethod
    def of(cls, model) -> ModelRef:
        """A model card's (or a site profile's) id and SHA256."""
        return cls(model.id, model.sha256)


@dataclass(frozen=True)
class Provenance:
    breastcadx: str
    model_set: str
    classifier: ModelRef
    classifier_config: str
    deep_model: str
    mask_origin: str  # one of MASK_ORIGINS
    segmenter: ModelRef | None = None  # None when the user drew the mask
    box_model: ModelRef | None = None  # the fusion's box-crop CNN member, when the classifier has one
    whole_image_model: ModelRef | None = None  # its whole-image CNN member, when the classifier has one
    site: ModelRef | None = None  # the site profile the probability, suggestion and presence follow (id, seal)

    def __post_init__(self) -> None:
        if self.mask_origin not in MASK_ORIGINS:
            raise ValueError(f"mask_origin must be one of {MASK_ORIGINS}, not {self.mask_origin!r}")

    def with_mask_origin(self, origin: str) -> Provenance:
        return replace(self, mask_origin=origin, segmenter=None if origin == "user" else self.segmenter)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> Provenance:
        seg, whole, site = (d.get(k) for k in ("segmenter", "whole_image_model", "site"))
        box = d.get("box_model", d.get("image_model"))  # its name in results written before 2026-12-06
        return cls(breastcadx=d["breastcadx"], model_set=d["model_set"], classifier=ModelRef(**d["classifier"]),
                   classifier_config=d["classifier_config"], deep_model=d["deep_model"],
                   mask_origin=d["mask_origin"], segmenter=ModelRef(**seg) if seg else None,
                   box_model=ModelRef(**box) if box else None,
                   whole_image_model=ModelRef(**whole) if whole else None, site=ModelRef(**site) if site else None)


@dataclass
class AnalysisResult:
    source: str
    lesion_found: bool
    provenance: Provenance
    mask: np.ndarray | None = None  # bool, on the input grid (None when read back from JSON alone)
    prediction: Prediction | None = None  # None when no lesion was found
    heatmap: np.ndarray | None = None  # float32 0..1 on the input grid
    radiomics: dict[str, float] = field(default_factory=dict)
    measurements: dict = field(default_factory=dict)
    lexicon: list[LexiconItem] = field(default_factory=list)  # BI-RADS lexicon categories with their evidence
    seconds: dict[str, float] = field(default_factory=dict)
    input_check: InputCheck = field(default_factory=InputCheck)
    extra: dict = field(default_factory=dict)  # front-door fields kept in result.json (e.g. "batch")
    presence_score: float | None = None  # the segmenter's presence score (automatic whole-image outlines)
    reader: ReaderView | None = None  # the radiologist's category, when given, beside BreastCADx's

    @property
    def flags(self) -> list[Flag]:
        """Everything the reader must see beside the numbers: an overridden input guard first, an edited mask last."""
        first = self.input_check.flags
        last = [EDITED_FLAG] if self.mask_origin == "edited" and self.lesion_found else []
        return first + (list(self.prediction.flags) if self.prediction else []) + last

    @property
    def probability(self) -> float | None:
        return self.prediction.probability if self.prediction else None

    @property
    def birads_suggestion(self) -> str | None:
        return self.prediction.birads if self.prediction else None

    @property
    def predicted_label(self) -> str:
        return self.prediction.label if self.prediction else "normal"

    @property
    def mask_origin(self) -> str:
        return self.provenance.mask_origin

    def site_lines(self) -> list[str]:
        """The site profile the numbers follow (id + seal) and the radiologist's category beside BreastCADx's:
        said wherever the result is shown (summary, overlay, SR)."""
        out = []
        site = self.provenance.site
        if site is not None:
            out.append(f"Site profile: {site.id} (SHA256 {site.sha256[:16]}): probability, suggestion and presence "
                       "follow this hospital's own cases")
        if self.reader is not None:
            r = self.reader
            out.append(f"Radiologist's BI-RADS: {r.category}; BreastCADx: {self.birads_suggestion or 'no lesion'}"
                       + (f"; combined by the site's rule {100 * r.combined_probability:.1f} %"
                          if r.combined_probability is not None else ""))
        return out

    def to_json(self) -> dict:
        p = self.prediction
        return {
            "schema": SCHEMA, "source": self.source, "lesion_found": self.lesion_found,
            "malignancy_probability": self.probability, "predicted_label": self.predicted_label,
            "birads_suggestion": self.birads_suggestion, "birads_note": p.suggestion_note if p else None,
            "flags": [f.to_json() for f in self.flags], "top_features": list(p.top_features) if p else [],
            "member_probabilities": dict(p.member_probabilities) if p else {},
            "ood_distance": p.ood_distance if p else None, "raw_probability": p.raw_probability if p else None,
            "measurements": self.measurements, "lexicon": [i.to_json() for i in self.lexicon],
            "seconds": self.seconds,
            "radiomics": {k: (float(v) if np.isfinite(v) else None) for k, v in self.radiomics.items()},
            "input_check": self.input_check.to_json(), "provenance": self.provenance.to_json(),
            "presence_score": self.presence_score, "reader": self.reader.to_json() if self.reader else None,
            "research_use_only": True, **self.extra,
        }

    @classmethod
    def from_json(cls, d: dict, mask: np.ndarray | None = None, heatmap: np.ndarray | None = None
                  ) -> AnalysisResult:
        if not isinstance(d, dict) or d.get("schema") not in READABLE_SCHEMAS:
            found = d.get("schema") if isinstance(d, dict) else type(d).__name__
            raise ResultFormatError(f"not a {SCHEMA} result (found: {found})")
        pred = None
        if d["malignancy_probability"] is not None:
            try:
                flags = [Flag.from_json(f) for f in d["flags"]]
            except (ValueError, KeyError, TypeError) as e:
                raise ResultFormatError(f"flags cannot be read ({e})") from None
            pred = Prediction(probability=d["malignancy_probability"], raw_probability=d["raw_probability"],
                              birads=d["birads_suggestion"], member_probabilities=d["member_probabilities"],
                              flags=[f for f in flags if f.code not in DERIVED_FLAGS],
                              top_features=list(d["top_features"]),
                              ood_distance=d["ood_distance"], suggestion_note=d["birads_note"] or SUGGESTION_NOTE)
        known = set(cls(source="", lesion_found=False, provenance=_PLACEHOLDER).to_json())
        return cls(source=d["source"], lesion_found=d["lesion_found"],
                   provenance=Provenance.from_json(d["provenance"]), mask=mask, prediction=pred, heatmap=heatmap,
                   radiomics={k: (np.nan if v is None else v) for k, v in d["radiomics"].items()},
                   measurements=d["measurements"], lexicon=[LexiconItem(**i) for i in d["lexicon"]],
                   seconds=d["seconds"],
                   input_check=InputCheck.from_json(d["input_check"]), presence_score=d.get("presence_score"),
                   reader=ReaderView(**d["reader"]) if d.get("reader") else None,
                   extra={k: v for k, v in d.items() if k not in known})


_PLACEHOLDER = Provenance("", "", ModelRef("", ""), "", "", "user")
