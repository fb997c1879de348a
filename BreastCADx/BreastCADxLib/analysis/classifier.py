"""Fusion classifier bundle: pickle-free files, SHA256-checked, evaluated with small numpy code.

Bundle = JSON card (structure, linear parameters, calibration, OOD statistics) + NPZ arrays + optional
native booster files (XGBoost JSON, LightGBM text) or skops files for other scikit-learn estimators.
A member = the feature branches it reads (radiomics selection + scaling; deep scaling + PCA) + an estimator;
members are combined as single / weighted soft vote (late) / logistic stacking.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.calibration import (
    apply_calibration,
    birads_suggestion,
    logit,
)
from BreastCADxLib.analysis.cards import FusionCard
from BreastCADxLib.analysis.registry import DEFAULT_MODEL_SET, load_card, model_set_dir
from BreastCADxLib.analysis.values import LOW_SCORE, MEMBER_LABELS, Flag, Prediction
from BreastCADxLib.errors import ModelError

DEFAULT_CLASSIFIER = "lesion_cls_fusion"
# the exact types skops does not trust by default that our estimators hold (tree ensembles, k-NN, MLP); nothing
# else loads, e.g. a FunctionTransformer carrying builtins.eval (a whole "builtins." prefix would have let it in)
SKOPS_TRUSTED_TYPES = frozenset({
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
})


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class _Estimator:
    def __init__(self, spec: dict, folder: Path) -> None:
        self.kind = spec["kind"]
        self.spec = spec
        if self.kind == "logistic":
            self.coef = np.asarray(spec["coef"], float)
            self.intercept = float(spec["intercept"])
        elif self.kind in ("xgboost", "lightgbm") and not _has(self.kind):
            raise ModelError(f"this bundle has a {self.kind} member, which needs the optional package "
                             f"(pip install 'breastcadx[boosters]'); no shipped bundle does", folder)
        elif self.kind == "xgboost":
            import xgboost

            self.booster = xgboost.Booster()
            self.booster.load_model(str(folder / spec["file"]))
        elif self.kind == "lightgbm":
            import lightgbm

            self.booster = lightgbm.Booster(model_file=str(folder / spec["file"]))
        elif self.kind == "skops":
            import skops.io as sio

            path = folder / spec["file"]
            untrusted = sio.get_untrusted_types(file=path)
            bad = [t for t in untrusted if t not in SKOPS_TRUSTED_TYPES]
            if bad:
                raise ModelError(f"skops file holds types outside the allow-list: {bad}", path)
            self.model = sio.load(path, trusted=untrusted)
        else:
            raise ModelError(f"unknown estimator kind {self.kind!r}")

    def proba(self, z: np.ndarray) -> np.ndarray:
        """(n, d) member input -> P(malignant) (n,)."""
        if self.kind == "logistic":
            return _sigmoid(z @ self.coef + self.intercept)
        if self.kind == "xgboost":
            import xgboost

            return self.booster.predict(xgboost.DMatrix(z))
        if self.kind == "lightgbm":
            return np.asarray(self.booster.predict(z), float)
        return self.model.predict_proba(z)[:, 1]


class FusionClassifier:
    def __init__(self, card: FusionCard) -> None:
        self.card = card
        folder = card.folder  # its files were verified with the model set (registry.verify_model_set)
        arrays = np.load(folder / card.arrays, allow_pickle=False)
        self.radiomics_names = list(card.radiomics_names)
        self.members = []
        for m in card.members:
            branches = []
            for b in m["branches"]:
                if b["kind"] == "radiomics":
                    idx = [self.radiomics_names.index(n) for n in b["selected"]]
                    branches.append(("radiomics", np.array(idx), arrays[b["mean"]], arrays[b["scale"]], None, None))
                else:
                    branches.append(("deep", None, arrays[b["mean"]], arrays[b["scale"]], arrays[b["pca_mean"]],
                                     arrays[b["pca_components"]]))
            self.members.append({"name": m["name"], "branches": branches, "est": _Estimator(m["estimator"], folder)})
        self.combine = card.combine
        self.calibration = card.calibration
        self.ood_mean = arrays["ood_mean"]
        self.ood_precision = arrays["ood_precision"]
        self.ood_threshold = float(card.ood["threshold"])
        self.explain_weight = arrays["explain_deep_weight"]
        self.explain_bias = float(card.explain["deep_bias"])
        # optional box-crop member: {"model": id, "weight": w}; raw = sigmoid(w logit(box) + (1-w) logit(features))
        self.box_member: dict | None = card.box_member
        # optional whole-image member {"model": id, "weight": v}: raw = sigmoid((1-v) z + v logit(whole)), z as above;
        # the card's key keeps its first name, "image_member" (the shipped cards and their SHA256 carry it)
        self.whole_member: dict | None = card.image_member

    # -- features -> member inputs -------------------------------------------------------------
    @staticmethod
    def _branch(b, rad: np.ndarray, deep: np.ndarray) -> np.ndarray:
        kind, idx, mean, scale, pca_mean, comps = b
        if kind == "radiomics":
            return (rad[:, idx] - mean) / scale
        z = (deep - mean) / scale
        return (z - pca_mean) @ comps.T

    def _member_input(self, m, rad, deep) -> np.ndarray:
        return np.hstack([self._branch(b, rad, deep) for b in m["branches"]])

    def _combine(self, probs: list[np.ndarray]) -> np.ndarray:
        kind = self.combine["kind"]
        if kind == "single":
            return probs[0]
        if kind == "weighted":
            return sum(w * p for w, p in zip(self.combine["weights"], probs))
        if kind == "stacking":
            x = np.column_stack(probs)
            return _sigmoid(x @ np.asarray(self.combine["coef"]) + self.combine["intercept"])
        raise ModelError(f"unknown combine kind {kind!r}")

    def raw_proba(self, rad: np.ndarray, deep: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        probs = {m["name"]: m["est"].proba(self._member_input(m, rad, deep)) for m in self.members}
        return self._combine(list(probs.values())), probs

    def fused_features(self, rad: np.ndarray, deep: np.ndarray) -> np.ndarray:
        """Selected radiomics z-scores + deep PCA components (first member's branch of each kind)."""
        parts, seen = [], set()
        for m in self.members:
            for b in m["branches"]:
                if b[0] not in seen:
                    seen.add(b[0])
                    parts.append(self._branch(b, rad, deep))
        return np.hstack(parts)

    def ood_distance(self, rad: np.ndarray, deep: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of the fused vector to the training data."""
        d = self.fused_features(rad, deep) - self.ood_mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.ood_precision, d))

    # -- one case -------------------------------------------------------------------------------------
    def with_image_members(self, raw_features: np.ndarray, box_probability, whole_probability=None) -> np.ndarray:
        """The fused raw probability when the card names image-level members, else the features' own."""
        if self.box_member is None and self.whole_member is None:
            return raw_features
        logits = {}
        for name, member, p in (("box", self.box_member, box_probability),
                                ("whole", self.whole_member, whole_probability)):
            if member is None:
                continue
            if p is None:
                raise ModelError(f"this classifier fuses the image-level model '{member['model']}': "
                                 "its probability is needed")
            logits[name], logits[f"{name}_weight"] = logit(np.asarray(p, float)), float(member["weight"])
        return _sigmoid(fused_logit(logit(raw_features), **logits))

    def fused(self, rad: np.ndarray, deep: np.ndarray, box_probability=None, whole_probability=None
              ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """The one scoring function: (calibrated probability, raw fused probability, each member's probability)
        from the feature members, the image-level members and the calibration, in that order. The prediction and
        its attributions both come from here."""
        raw, members = self.raw_proba(rad, deep)
        raw = self.with_image_members(raw, box_probability, whole_probability)
        return apply_calibration(self.calibration, raw), raw, members

    def predict(self, radiomics: dict[str, float], deep: np.ndarray, top_k: int = 5,
                box_probability: float | None = None, whole_probability: float | None = None) -> Prediction:
        missing = [n for n in self.radiomics_names if n not in radiomics]
        if missing:
            raise ModelError(f"{len(missing)} radiomics features this classifier was fitted with were not computed "
                             f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): the installed "
                             "pyradiomics or its parameter file (Resources/Radiomics) is not the one "
                             "the model set was made with; reinstall the extension's requirements",
                             self.card.path)
        rad = np.array([[radiomics[n] for n in self.radiomics_names]], float)
        deep = np.asarray(deep, float).reshape(1, -1)
        prob, raw, members = self.fused(rad, deep, box_probability, whole_probability)
        if self.box_member is not None:
            members["box_cnn"] = np.array([box_probability], float)
        p = float(prob[0])
        flags = []
        dist = float(self.ood_distance(rad, deep)[0])
        if dist > self.ood_threshold:
            flags.append(Flag("out_of_distribution", "features far from the training data; treat the probability "
                                                     "with care"))
        if self.whole_member is not None:
            members["whole_image_cnn"] = np.array([whole_probability], float)
        return Prediction(probability=p, raw_probability=float(raw[0]), birads=birads_suggestion(p),
                          member_probabilities={k: float(v[0]) for k, v in members.items()}, flags=flags,
                          top_features=self.top_features(rad, deep, top_k, box_probability, whole_probability),
                          ood_distance=dist)

    def top_features(self, rad, deep, k: int, box_probability=None, whole_probability=None) -> list[dict]:
        """Occlusion attribution: the change in the fused malignancy probability (image members held at their
        values) when one selected radiomics feature is set to its training mean; all probes scored at once."""
        cols = []
        for m in self.members:
            for b in m["branches"]:
                if b[0] == "radiomics":
                    cols += [(int(col), float(b[2][j])) for j, col in enumerate(b[1])]
        if not cols:
            return []
        probes = np.repeat(rad, len(cols) + 1, axis=0)  # row 0: the case as it is
        for i, (col, mean) in enumerate(cols, start=1):
            probes[i, col] = mean
        n = len(probes)
        box = None if box_probability is None else np.full(n, box_probability, float)
        whole = None if whole_probability is None else np.full(n, whole_probability, float)
        prob = self.fused(probes, np.repeat(deep, n, axis=0), box, whole)[0]
        out = [{"feature": self.radiomics_names[col], "value": float(rad[0, col]),
                "contribution": float(prob[0] - prob[i])} for i, (col, _) in enumerate(cols, start=1)]
        out.sort(key=lambda f: -abs(f["contribution"]))
        return out[:k]


def load_classifier(model_id: str = DEFAULT_CLASSIFIER, models_dir: Path | None = None) -> FusionClassifier:
    card = load_card(model_id, models_dir)
    if not isinstance(card, FusionCard):
        raise ModelError(f"'{model_id}' is a {card.kind} card, not a classifier", card.path)
    if card.deep_model:  # the deep branch is the frozen ImageNet trunk; fine-tuned trunks are not shipped
        raise ModelError(f"classifier needs the deep model '{card.deep_model}', which this version does not have",
                         card.path)
    return FusionClassifier(card)


@lru_cache(maxsize=4)
def get_classifier(model_id: str = DEFAULT_CLASSIFIER, model_set: str = DEFAULT_MODEL_SET) -> FusionClassifier:
    return load_classifier(model_id, model_set_dir(model_set))


def fused_logit(features, box=None, box_weight=0.0, whole=None, whole_weight=0.0):
    """The fusion's logit from its members' logits: box_weight x box + (1 - box_weight) x features, then
    (1 - whole_weight) x that + whole_weight x whole; an absent member is left out. Weights may be arrays."""
    z = features if box is None else box_weight * box + (1 - box_weight) * features
    return z if whole is None else (1 - whole_weight) * z + whole_weight * whole


def bundle_for(card: FusionCard, mask_origin: str) -> str:
    """The classifier id a mask of this origin is classified with: a card may name another bundle for the
    segmenter's own masks (`automatic_masks`: its id; fitted on that segmenter's outlines too); drawn and corrected
    outlines stay with the card's own bundle."""
    other = card.automatic_masks
    return other if other and mask_origin == "auto" else card.id


def classifier_for(model_set: str, mask_origin: str) -> FusionClassifier:
    main = get_classifier(model_set=model_set)
    return get_classifier(bundle_for(main.card, mask_origin), model_set)


# a member at or above it makes a fused score below LOW_SCORE no confident benign call (benchmarks/results/
# confident_benign__three-site-train.md: out of fold it catches cancers the box member pulled down, flagging few
# benign lesions; 0.3 flags up to 11 % of them)
DISSENT = 0.5
DISAGREE = 0.5  # two members this far apart disagree strongly


def dissenting_members(members: dict[str, float], probability: float) -> dict[str, float]:
    """The members ({name: probability}) that score a lesion at DISSENT or more while the fused probability is
    below LOW_SCORE: a confident benign call the classifier's own parts do not share."""
    return {k: v for k, v in members.items() if v >= DISSENT} if probability < LOW_SCORE else {}


def member_flags(members: dict[str, float], probability: float) -> list[Flag]:
    """What the members (Prediction.member_probabilities) say against the probability shown (after a site
    profile's calibration), one flag at most: members at DISSENT or more under a confident benign call, else the
    outline's two members (features and box crop, or radiomics and deep) more than DISAGREE apart."""
    if dissent := dissenting_members(members, probability):
        return [Flag("member_dissent_low_score", f"a score of {100 * probability:.1f} %, but a member of the "
                     "classifier puts it at 50 % or more ("
                     + ", ".join(f"{MEMBER_LABELS.get(k, k)} {100 * v:.0f} %" for k, v in dissent.items())
                     + "): the score is not a reason to call it benign")]
    pair = {k: v for k, v in members.items() if k != "whole_image_cnn"}
    if len(pair) == 2 and abs(float(np.subtract(*pair.values()))) > DISAGREE:
        return [Flag("members_disagree", "the outline's features and the image model of the lesion's box disagree "
                     "strongly" if "box_cnn" in pair else "radiomics and deep models disagree strongly")]
    return []


__all__ = ["DISSENT", "FusionClassifier", "Prediction", "load_classifier", "get_classifier", "classifier_for",
           "bundle_for", "dissenting_members", "fused_logit", "member_flags"]
