"""Model registry: one JSON card per model in Resources/Models, weights checked by SHA256, loaded safely."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from BreastCADxLib.errors import ModelError

if TYPE_CHECKING:  # torch is imported when a model is loaded, so `breastcadx --help` and `info` start fast
    import torch

MODELS_DIR = Path(os.environ.get("BREASTCADX_MODELS_DIR",
                                  Path(__file__).resolve().parents[2] / "Resources" / "Models"))
# Model sets: the default is trained on both sites; "busi-only" is the same design trained on BUSI alone, so that
# anyone can score the design at a hospital it has never seen. Each set is a folder of cards + weights.
MODEL_SETS = ("two-site", "busi-only")
DEFAULT_MODEL_SET = "two-site"


def model_set_dir(name: str = DEFAULT_MODEL_SET) -> Path:
    if name not in MODEL_SETS:
        raise ModelError(f"unknown model set '{name}' (known: {', '.join(MODEL_SETS)})")
    return MODELS_DIR if name == DEFAULT_MODEL_SET else MODELS_DIR / name


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_card(model_id: str, models_dir: Path | None = None) -> dict:
    """The model card: architecture, input spec, metrics and weights file with its SHA256."""
    path = (models_dir or MODELS_DIR) / f"{model_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (models_dir or MODELS_DIR).glob("*.json"))
        raise ModelError(f"no model card for '{model_id}' (known: {', '.join(known) or 'none'})", path)
    try:
        card = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"model card is not valid JSON ({e})", path) from None
    for key in ("id", "weights", "sha256"):
        if key not in card:
            raise ModelError(f"model card lacks '{key}'", path)
    card["_dir"] = str(path.parent)
    return card


def verified_weights_path(card: dict) -> Path:
    path = Path(card["_dir"]) / card["weights"]
    if not path.is_file():
        raise ModelError("model weights file is missing (reinstall the extension or re-run training)", path)
    digest = sha256_of(path)
    if digest != card["sha256"]:
        raise ModelError(f"SHA256 mismatch: file is {digest[:12]}..., card expects {card['sha256'][:12]}... "
                         "(altered or corrupt weights)", path)
    return path


def load_state_dict(card: dict) -> dict[str, torch.Tensor]:
    """Verified, pickle-free load of a torch state dict (weights_only=True), cast to float32."""
    import torch

    path = verified_weights_path(card)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"weights could not be read ({e.__class__.__name__}: {e})", path) from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def choose_device(preference: str | None = None) -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu' or 'cuda[:N]'; BREASTCADX_DEVICE overrides 'auto'."""
    import torch

    pref = (preference or "auto").lower()
    if pref == "auto":
        pref = os.environ.get("BREASTCADX_DEVICE", "auto").lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device '{pref}' requested but no CUDA device is available (use 'cpu' or 'auto')")
    try:
        return torch.device(pref)
    except RuntimeError:
        raise ModelError(f"unknown device '{pref}' (use auto, cpu or cuda)") from None
