"""Model registry: one JSON card per model in Resources/Models, weights checked by SHA256, loaded safely."""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from BreastCADxLib.errors import ModelError

if TYPE_CHECKING:  # torch is imported when a model is loaded, so `breastcadx --help` and `info` start fast
    import torch

    from BreastCADxLib.analysis.cards import ModelCard

MODELS_DIR = Path(os.environ.get("BREASTCADX_MODELS_DIR",
                                  Path(__file__).resolve().parents[2] / "Resources" / "Models"))
# The shipped set, trained on three hospitals (BUSI, BUS-BRA L5, BUS-UCLM). Sets trained with a site held out are
# training outputs (training/, benchmarks/), usable by folder like any set `breastcadx train` makes.
MODEL_SETS = ("three-site",)
DEFAULT_MODEL_SET = "three-site"
MODELSET_FILE = "modelset.json"
SEGMENTER_MODEL = "lesion_seg_lite0"  # a set's segmenter; a set without one takes the user's box as the finding
MODELSET_SCHEMA = "breastcadx-modelset/1"


def model_set_dir(name: str = DEFAULT_MODEL_SET) -> Path:
    """The folder of a shipped set (by name), or of a user's set (a folder holding modelset.json: made by the
    training pipeline; verified like a shipped one before any of its models is used)."""
    if name in MODEL_SETS:
        return MODELS_DIR if name == DEFAULT_MODEL_SET else MODELS_DIR / name
    folder = Path(name).expanduser()
    if folder.is_dir() and (folder / MODELSET_FILE).is_file():
        return folder.resolve()
    raise ModelError(f"unknown model set '{name}': one of {', '.join(MODEL_SETS)}, or a folder holding a "
                     f"{MODELSET_FILE}")


def has_segmenter(name: str = DEFAULT_MODEL_SET) -> bool:
    """Whether the set finds the finding itself (else the user's box locates it: `train --segmenter-epochs 0`, or
    a segmenter that found too few findings out of fold)."""
    return (model_set_dir(name) / f"{SEGMENTER_MODEL}.json").is_file()


def model_set_info(name: str = DEFAULT_MODEL_SET) -> dict:
    """What a set declares of itself (id, modality, sites), from its verified manifest."""
    manifest = verify_model_set(model_set_dir(name))
    return {k: manifest.get(k) for k in ("id", "modality", "sites")}


def installed_sets() -> str:
    """The shipped sets and their modality, for a message that names what is installed."""
    out = []
    for name in MODEL_SETS:
        try:
            out.append(f"{name} ({model_set_info(name)['modality']})")
        except ModelError:
            out.append(f"{name} (damaged)")
    return ", ".join(out)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


CARD_FILE_KEYS = ("weights", "arrays")  # a card's own files; a fusion bundle also lists `files` (name -> SHA256)


def card_files(card: dict) -> list[str]:
    """The files a card needs beside itself."""
    names = [card[k] for k in CARD_FILE_KEYS if card.get(k)]
    return sorted(set(names) | set(card.get("files", {})))


def write_modelset(folder: Path, **meta) -> dict:
    """(Re)write folder/modelset.json: every card and every file a card needs, with its SHA256, and what the set
    is (id, modality, sites: kept from the earlier manifest unless given). The only way a model set is made."""
    folder = Path(folder)
    path = folder / MODELSET_FILE
    old = json.loads(path.read_text()) if path.is_file() else {}
    files: dict[str, str] = {}
    for card_path in sorted(folder.glob("*.json")):
        if card_path.name == MODELSET_FILE:
            continue
        card = json.loads(card_path.read_text())
        if not isinstance(card, dict) or "id" not in card:
            continue  # not a card (e.g. a results file)
        for name in [card_path.name, *card_files(card)]:
            files[name] = sha256_of(folder / name)
    manifest = {"schema": MODELSET_SCHEMA, "id": meta.get("id", old.get("id", folder.name)),
                "modality": meta.get("modality", old.get("modality", "US")),
                "sites": meta.get("sites", old.get("sites", [])), "files": files}
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    _verified.cache_clear()
    return manifest


def save_card(folder: Path, card: ModelCard) -> Path:
    """Write a typed card into a model set folder and refresh the set's manifest (the training side's one writer)."""
    from BreastCADxLib.analysis.cards import ModelCard

    if not isinstance(card, ModelCard):
        raise TypeError("save_card takes a typed card (analysis.cards), not a dict")
    path = Path(folder) / f"{card.id}.json"
    path.write_text(json.dumps(card.to_json(), indent=1) + "\n")  # to_json holds it to the schema
    write_modelset(Path(folder))
    return path


def _signature(folder: Path) -> tuple:
    """What verification depends on: the manifest's and every file's size and modification time."""
    out = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        st = p.stat()
        out.append((p.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


def verify_model_set(folder: Path | None = None) -> dict:
    """The one check of a model set, before any of its models is used: modelset.json is there, every file it lists
    is there with its SHA256, and no card in the folder is missing from it. Raises ModelError naming the file."""
    folder = Path(folder or MODELS_DIR)
    return _verified(str(folder), _signature(folder))


@lru_cache(maxsize=16)
def _verified(folder_name: str, signature: tuple) -> dict:
    folder = Path(folder_name)
    path = folder / MODELSET_FILE
    if not path.is_file():
        raise ModelError(f"no {MODELSET_FILE}: not a complete model set (reinstall the extension, or make the set "
                         "with the training pipeline)", folder)
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{MODELSET_FILE} cannot be read ({e.__class__.__name__})", path) from None
    if manifest.get("schema") != MODELSET_SCHEMA:
        raise ModelError(f"{MODELSET_FILE} is not a {MODELSET_SCHEMA} manifest", path)
    for name, expected in files.items():
        f = folder / name
        if Path(name).name != name or not f.is_file():
            raise ModelError(f"a file of the model set is missing (listed in {MODELSET_FILE})", f)
        digest = sha256_of(f)
        if digest != expected:
            raise ModelError(f"SHA256 mismatch: the file is {digest[:12]}..., {MODELSET_FILE} expects "
                             f"{expected[:12]}... (altered or corrupt)", f)
    unlisted = [p.name for p in folder.glob("*.json") if p.name != MODELSET_FILE and p.name not in files]
    if unlisted:
        raise ModelError(f"card {unlisted[0]} is not listed in {MODELSET_FILE}: the set was changed by hand",
                         folder / unlisted[0])
    for name in files:  # a card's own SHA256 (what provenance reports) must be the file the manifest checked
        card = json.loads((folder / name).read_text()) if name.endswith(".json") else None
        if isinstance(card, dict) and "id" in card:
            missing = [f for f in card_files(card) if f not in files]
            if missing or (card.get("weights") and card.get("sha256") != files[card["weights"]]):
                raise ModelError(f"the card does not match {MODELSET_FILE} ("
                                 + (f"{missing[0]} not listed" if missing else "its weights' SHA256 differs") + ")",
                                 folder / name)
    return manifest


def model_set_fingerprint(name: str = DEFAULT_MODEL_SET) -> str:
    """SHA256 of the verified manifest: changes when any file of the set changes (guard included)."""
    folder = model_set_dir(name)
    verify_model_set(folder)
    return hashlib.sha256((folder / MODELSET_FILE).read_bytes()).hexdigest()


def load_card(model_id: str, models_dir: Path | None = None) -> ModelCard:
    """The typed model card (analysis.cards: architecture, input spec, metrics and weights file with its SHA256),
    from a verified set."""
    from BreastCADxLib.analysis.cards import ModelCard

    verify_model_set(models_dir or MODELS_DIR)
    path = (models_dir or MODELS_DIR) / f"{model_id}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (models_dir or MODELS_DIR).glob("*.json"))
        raise ModelError(f"no model card for '{model_id}' (known: {', '.join(known) or 'none'})", path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"model card is not valid JSON ({e})", path) from None
    return ModelCard.from_json(data, path.parent)


def verified_weights_path(card: ModelCard) -> Path:
    """The card's weights file, verified with its model set (verify_model_set: the one SHA256 check, which also
    holds every card's files to the manifest)."""
    verify_model_set(card.folder)
    return card.weights_path


def load_state_dict(card: ModelCard) -> dict[str, torch.Tensor]:
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
