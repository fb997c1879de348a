"""The model card's contract: Resources/Schemas/model_card.schema.json, checked where a card is written
(registry.save_card, the training side's one writer) and where it is loaded (registry.load_card), and the typed
view the consumers read (ModelCard). Torch-free; the check is a small reader of the schema's own keywords (the
ones it uses), so the schema stays the one source; a test holds every shipped card to it with jsonschema too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    body = {k: v for k, v in card.items() if k != "_dir"}  # the registry's runtime note
    problems = _problems(body, card_schema(), "card", card_schema())
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


@dataclass(frozen=True)
class ModelCard:
    """What the consumers read of a checked card; `data` keeps the whole card (metrics, notes) for the record."""

    id: str
    kind: str
    folder: Path
    weights: str
    sha256: str
    command: str
    data: dict

    @classmethod
    def from_dict(cls, card: dict) -> ModelCard:
        check_card(card, Path(card.get("_dir", ".")) / f"{card.get('id')}.json")
        return cls(card["id"], card_kind(card["id"]), Path(card.get("_dir", ".")), card["weights"], card["sha256"],
                   card["training"]["command"], card)

    @property
    def arch(self) -> str:
        """The network's encoder (segmenter and image CNNs)."""
        if self.kind not in ("segmenter", "image_cnn"):
            raise ModelError(f"a {self.kind} card has no network architecture", self.folder / f"{self.id}.json")
        return self.data["architecture"]["arch"]

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights


__all__ = ["ModelCard", "check_card", "card_kind", "card_schema"]
