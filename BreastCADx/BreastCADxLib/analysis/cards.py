"""The model card's contract: Resources/Schemas/model_card.schema.json, checked where a card is written
(registry.save_card, the training side's one writer) and where it is loaded (registry.load_card), and the typed
cards both sides use (ModelCard and one class per kind). Torch-free; the check is a small reader of the schema's
own keywords (the ones it uses), so the schema stays the one source; a test holds every shipped card to it with
jsonschema too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

from BreastCADxLib.errors import ModelError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "Resources" / "Schemas" / "model_card.schema.json"
_TYPES = {"object": dict, "array": list, "string": str, "number": (int, float), "integer": int, "boolean": bool}


@lru_cache(maxsize=1)
def card_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _problems(value, schema: dict, where: str, root: dict) -> list[str]:
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    out = []
    kind = schema.get("type")
    if kind and not (isinstance(value, _TYPES[kind]) and not (kind in ("number", "integer") and
                                                               isinstance(value, bool))):
        return [f"{where} must be {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where} must be one of {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        out.append(f"{where} must be {schema['const']!r}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        out.append(f"{where} does not match {schema['pattern']}")
    if "minimum" in schema and isinstance(value, (int, float)) and value < schema["minimum"]:
        out.append(f"{where} is below {schema['minimum']}")
    if "maximum" in schema and isinstance(value, (int, float)) and value > schema["maximum"]:
        out.append(f"{where} is above {schema['maximum']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where} needs at least {schema['minItems']} items")
        for i, item in enumerate(value):
            if "items" in schema:
                out += _problems(item, schema["items"], f"{where}[{i}]", root)
    if isinstance(value, dict):
        out += [f"{where}.{k} is missing" for k in schema.get("required", []) if k not in value]
        for k, sub in schema.get("properties", {}).items():
            if k in value:
                out += _problems(value[k], sub, f"{where}.{k}", root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for k, v in value.items():
                if k not in schema.get("properties", {}):
                    out += _problems(v, extra, f"{where}.{k}", root)
        for part in schema.get("allOf", []):
            if not _problems(value, part["if"], where, root):
                out += _problems(value, part["then"], where, root)
    return out


def check_card(card: dict, path: Path | str | None = None) -> None:
    """Refuse a card outside the schema (ModelError naming the file and the first problems)."""
    problems = _problems(card, card_schema(), "card", card_schema())
    if problems:
        raise ModelError("model card outside its schema: " + "; ".join(problems[:3]), path)


def card_kind(model_id: str) -> str:
    if model_id.startswith("lesion_seg_"):
        return "segmenter"
    if model_id in ("lesion_box_cnn", "lesion_whole_cnn"):
        return "image_cnn"
    if model_id.startswith("lesion_cls_fusion"):
        return "fusion"
    if model_id == "image_guard":
        return "guard"
    return "other"


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """One model of a model set, typed: what every kind has; each kind's class adds what its consumer reads.
    `notes` keeps the rest of the card (metrics, dates, design text) for the record; `folder` is where it was read
    (not written). `from_json` and `to_json` are the only ways between a card file and this object: both hold the
    card to the schema, and `to_json(from_json(d)) == d`."""

    KIND: ClassVar[str] = "other"
    ALWAYS: ClassVar[tuple[str, ...]] = ()  # optional fields written even when None (the files carry them)

    id: str
    task: str
    weights: str
    sha256: str
    training: dict
    intended_use: str | None = None
    notes: dict = field(default_factory=dict)
    folder: Path = Path(".")

    @classmethod
    def from_json(cls, data: dict, folder: Path | str | None = None) -> ModelCard:
        """The typed card of a card file's content (its kind follows from its id); ModelError outside the schema."""
        folder = Path(folder) if folder is not None else Path(".")
        if not isinstance(data, dict):
            raise ModelError("a model card must be a JSON object", folder)
        path = folder / f"{data.get('id')}.json"
        check_card(data, path)
        kind = CARD_CLASSES.get(card_kind(data["id"]), ModelCard)
        if cls is not ModelCard and kind is not cls:
            raise ModelError(f"a {kind.KIND} card where a {cls.KIND} card was expected", path)
        own = {f.name for f in fields(kind)} - {"notes", "folder"}
        return kind(**{k: v for k, v in data.items() if k in own},
                    notes={k: v for k, v in data.items() if k not in own}, folder=folder)

    def to_json(self) -> dict:
        """The card file's content (checked against the schema)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("notes", "folder") and (value is not None or f.name in self.ALWAYS):
                out[f.name] = value
        out.update(self.notes)
        check_card(out, self.path)
        return out

    @property
    def kind(self) -> str:
        return self.KIND

    @property
    def path(self) -> Path:
        return self.folder / f"{self.id}.json"

    @property
    def command(self) -> str:
        return self.training["command"]

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights

    @property
    def arch(self) -> str:
        raise ModelError(f"a {self.kind} card has no network architecture", self.path)


@dataclass(frozen=True, kw_only=True)
class _NetworkCard(ModelCard):
    """A card whose weights are a network: its architecture names the encoder."""

    architecture: dict

    @property
    def arch(self) -> str:
        return self.architecture["arch"]


@dataclass(frozen=True, kw_only=True)
class SegmenterCard(_NetworkCard):
    KIND: ClassVar[str] = "segmenter"

    model_set: str
    input: dict
    postprocessing: dict

    @property
    def size(self) -> tuple[int, int]:
        return int(self.input["height"]), int(self.input["width"])


@dataclass(frozen=True, kw_only=True)
class ImageCnnCard(_NetworkCard):
    """An image-level member of the fusion: the box crop (view "box") or the whole image (view "whole")."""

    KIND: ClassVar[str] = "image_cnn"

    view: str
    crop_margins: list


@dataclass(frozen=True, kw_only=True)
class FusionCard(ModelCard):
    """A feature bundle: its arrays, the members' estimators, how they combine, calibration, OOD, explanation; and
    the image members fused with it (box_member / image_member: {"model": id, "weight": w})."""

    KIND: ClassVar[str] = "fusion"
    ALWAYS: ClassVar[tuple[str, ...]] = ("deep_model",)

    model_set: str
    arrays: str
    files: dict
    members: list
    combine: dict
    calibration: dict
    ood: dict
    explain: dict
    radiomics_names: list
    mode: str
    classifier: str
    deep_crop: str = "mask"
    deep_model: str | None = None
    box_member: dict | None = None
    image_member: dict | None = None  # the whole-image member (the key keeps its first name)
    automatic_masks: str | None = None  # another bundle of the set for the segmenter's own masks


@dataclass(frozen=True, kw_only=True)
class GuardCard(ModelCard):
    KIND: ClassVar[str] = "guard"

    threshold: float
    validated_on: dict
    embedding: str


CARD_CLASSES: dict[str, type[ModelCard]] = {c.KIND: c for c in (SegmenterCard, ImageCnnCard, FusionCard, GuardCard)}

__all__ = ["ModelCard", "SegmenterCard", "ImageCnnCard", "FusionCard", "GuardCard", "CARD_CLASSES", "check_card",
           "card_kind", "card_schema"]
