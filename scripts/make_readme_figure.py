"""The README figure (docs/overlays.png): `breastcadx analyze --heatmap` on four committed cases, overlays tiled.

    .venv/bin/python scripts/make_readme_figure.py

1. a benign BUS-BRA L5 lesion (bus_0368-l), three-site set, automatic mask;
2. a malignant BUSI lesion (malignant_001), three-site set, automatic mask;
3. a malignant BUS-BRA L5 image enlarged five times (a large image: the text panel scales);
4. bus_0622-l with the busi-only set (a hospital it never saw), lesion expected: the low-confidence candidate.
Prints each case's probability, suggestion and flags (the README caption quotes them).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "BreastCADx" / "Testing" / "Data"
OUT = ROOT / "docs" / "overlays.png"
HEIGHT = 640  # each overlay scaled to this height before tiling


def analyze(image: Path, out: Path, *extra: str) -> dict:
    cmd = [str(Path(sys.executable).with_name("breastcadx")), "analyze", str(image), "--out", str(out),
           "--heatmap", "--device", "cpu", *extra]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((out / "result.json").read_text())


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        big = work / "bus_0366-l_x5.png"
        src = Image.open(DATA / "busbra_l5" / "bus_0366-l.png")
        src.resize((src.width * 5, src.height * 5), Image.Resampling.BICUBIC).save(big)
        cases = [("benign BUS-BRA", DATA / "busbra_l5" / "bus_0368-l.png", ()),
                 ("malignant BUSI", DATA / "busi" / "malignant_001.png", ()),
                 ("enlarged x5", big, ()),
                 ("busi-only, lesion expected", DATA / "busbra_l5" / "bus_0622-l.png",
                  ("--model-set", str(DATA / "model_sets" / "busi-only"), "--expect-lesion"))]
        tiles = []
        for i, (name, image, extra) in enumerate(cases):
            res = analyze(image, work / f"case{i}", *extra)
            print(f"{name}: {res['malignancy_probability']:.1%}, suggestion {res['birads_suggestion']}, "
                  f"flags {res['flags']}")
            im = Image.open(work / f"case{i}" / "overlay.png").convert("RGB")
            tiles.append(im.resize((round(im.width * HEIGHT / im.height), HEIGHT), Image.Resampling.LANCZOS))
        rows = [tiles[:2], tiles[2:]]
        width = max(sum(t.width for t in r) for r in rows)
        sheet = Image.new("RGB", (width, HEIGHT * len(rows)), "white")
        for y, r in enumerate(rows):
            x = 0
            for t in r:
                sheet.paste(t, (x, y * HEIGHT))
                x += t.width
        sheet.save(OUT, optimize=True)
        print(f"wrote {OUT} {sheet.size} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
