"""The three training sites and their committed splits, for every training and benchmark script.

Site A, ``busi``: BUSI (Cairo, GE LOGIQ E9), duplicate-aware split ``training/splits/busi.csv``.
Site B, ``busbra_l5``: BUS-BRA's GE Logiq 5 part (Rio de Janeiro), patient-grouped split
``training/splits/busbra_l5.csv`` (made by ``training/split_busbra.py``).
Site C, ``busuclm``: BUS-UCLM (Ciudad Real, Siemens ACUSON S2000; 410 lesion-free views), patient-grouped split
``training/splits/busuclm.csv`` (made by ``training/split_busuclm.py``; data laid out by its ``prepare.py``).

Every split file has the columns ``case, label, group, split, fold``; ``group`` never crosses ``split``.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SITES = ("busi", "busbra_l5", "busuclm")
SPLITS = Path(__file__).resolve().parent / "splits"
DEFAULT_DATA = {"busi": Path("../shared/data/busi"), "busbra_l5": Path("../shared/data/busbra_l5"),
                "busuclm": Path("../data/busuclm")}
SITE_NAMES = {"busi": "BUSI (Cairo, GE LOGIQ E9)", "busbra_l5": "BUS-BRA GE Logiq 5 part (Rio de Janeiro)",
              "busuclm": "BUS-UCLM (Ciudad Real, Siemens ACUSON S2000)"}
SITE_LABELS = {"busi": "benign, malignant, normal", "busbra_l5": "benign, malignant",
               "busuclm": "benign, malignant, normal"}
# every card trained on a site cites it (BUS-UCLM's README asks for the notice and the article in every card)
CITATIONS = {
    "busi": "W. Al-Dhabyani, M. Gomaa, H. Khaled, A. Fahmy, Dataset of breast ultrasound images, Data in Brief "
            "28:104863, 2020, doi:10.1016/j.dib.2019.104863",
    "busbra_l5": "W. Gomez-Flores, M. J. Gregorio-Calas, W. C. de Albuquerque Pereira, BUS-BRA: A Breast Ultrasound "
                 "Dataset for Assessing Computer-aided Diagnosis Systems, Medical Physics 51(4):3110-3123, 2024",
    "busuclm": "N. Vallez et al., BUS-UCLM: Breast ultrasound lesion segmentation dataset, Scientific Data, 2025, "
               "doi:10.1038/s41597-025-04562-3 (data record CC BY 4.0; the authors' code repository says CC BY-NC "
               "4.0: research use, non-commercial)",
}
SET_NAMES = {("busi",): "busi-only", ("busi", "busbra_l5"): "two-site", ("busi", "busbra_l5", "busuclm"): "three-site",
             ("busbra_l5", "busuclm"): "held-out-busi"}  # the last: a training output (BUSI as a new hospital)
# sets that are training outputs, not shipped, by folder (--model-set FOLDER)
BUSI_ONLY = Path("BreastCADx/Testing/Data/model_sets/busi-only")  # never saw BUS-BRA or BUS-UCLM
HELD_OUT_BUSI = Path("runs/held_out/BC")  # never saw BUSI (training.pipeline --set rotations set_BC)


def set_name(sites: list[str]) -> str:
    """The model set a training on these sites makes (its id in modelset.json and every card)."""
    key = tuple(s for s in SITES if s in sites)
    if key not in SET_NAMES or len(key) != len(sites):
        raise SystemExit(f"no model set is made from the sites {','.join(sites)}: one of "
                         + "; ".join(",".join(k) for k in SET_NAMES))
    return SET_NAMES[key]


def citations(sites: list[str]) -> list[str]:
    return [CITATIONS[s] for s in sites]


def split_text(sites: list[str]) -> str:
    return ", ".join(f"training/splits/{s}.csv" for s in sites)


@dataclass(frozen=True)
class Case:
    site: str
    case: str
    label: str  # benign | malignant | normal
    group: str  # duplicate group (BUSI) or patient (BUS-BRA)
    split: str  # train | val | test
    fold: int
    image: Path
    mask: Path
    birads: int | None = None  # the ultrasonographer's category (BUS-BRA only)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.case}"

    @property
    def malignant(self) -> bool:
        return self.label == "malignant"

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Image (uint8 grey) and reference mask (bool)."""
        img = np.asarray(Image.open(self.image).convert("L"))
        msk = np.asarray(Image.open(self.mask).convert("L")) > 127
        return img, msk


def _read(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def site_cases(site: str, data: Path, roles: tuple[str, ...] | None = None, lesions_only: bool = False) -> list[Case]:
    """The site's cases from its committed split, optionally only some roles (train/val/test)."""
    rows = _read(SPLITS / f"{site}.csv")
    out = []
    if site == "busi":
        for r in rows:
            folder = data / r["label"]
            out.append(Case(site, r["case"], r["label"], r["group"], r["split"], int(r["fold"]),
                            folder / f"{r['case']}.png", folder / f"{r['case']}_mask.png"))
    elif site == "busbra_l5":
        manifest = {m["case_id"]: m for m in _read(data / "manifest.csv")}
        for r in rows:
            m = manifest[r["case"]]
            out.append(Case(site, r["case"], r["label"], r["group"], r["split"], int(r["fold"]),
                            data / m["image"], data / m["mask"], int(m["birads"])))
    elif site == "busuclm":
        manifest = {m["case_id"]: m for m in _read(data / "manifest.csv")}
        for r in rows:
            m = manifest[r["case"]]
            out.append(Case(site, r["case"], r["label"], r["group"], r["split"], int(r["fold"]),
                            data / m["image"], data / m["mask"]))
    else:
        raise ValueError(f"unknown site '{site}' (known: {', '.join(SITES)})")
    return [c for c in out if (roles is None or c.split in roles) and not (lesions_only and c.label == "normal")]


def add_data_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--busi", type=Path, default=DEFAULT_DATA["busi"], help="BUSI data folder")
    ap.add_argument("--busbra", type=Path, default=DEFAULT_DATA["busbra_l5"], help="BUS-BRA L5 data folder")
    ap.add_argument("--busuclm", type=Path, default=DEFAULT_DATA["busuclm"],
                    help="BUS-UCLM data folder (written by ../shared/data/busuclm/prepare.py)")


def data_dir(args: argparse.Namespace | None, site: str) -> Path:
    """A site's data folder: as the command line says (add_data_args), else the default."""
    if args is None:
        return DEFAULT_DATA[site]
    return {"busi": args.busi, "busbra_l5": args.busbra, "busuclm": args.busuclm}[site]


def draw_patients(items: list, n: int, rng: np.random.Generator) -> tuple[list, list]:
    """Whole patients (each item's `.group`) in random order until at least n items; (drawn, rest)."""
    groups = sorted({c.group for c in items})
    rng.shuffle(groups)
    sizes: dict[str, int] = {}
    for c in items:
        sizes[c.group] = sizes.get(c.group, 0) + 1
    taken, count = set(), 0
    for g in groups:
        if count >= n:
            break
        taken.add(g)
        count += sizes[g]
    return [c for c in items if c.group in taken], [c for c in items if c.group not in taken]


def cases(args: argparse.Namespace, sites: list[str] | tuple[str, ...], roles: tuple[str, ...] | None = None,
          lesions_only: bool = False) -> list[Case]:
    return [c for s in sites for c in site_cases(s, data_dir(args, s), roles, lesions_only)]
