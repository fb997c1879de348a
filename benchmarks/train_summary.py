"""`breastcadx train` on 2 cores, side by side: wall time per stage, each network's own training clock and peak
memory for the mammography set (mini-MIAS), a 100-case ultrasound fine-tune (`--from`) against the same cases from
ImageNet, and the shipped three-site ultrasound set. Read from the committed reports that measured them
(train_minimias, train_from, train_three_sites .json); nothing is trained here.

    python -m benchmarks.train_summary

Writes benchmarks/results/train.md/json.
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.machine import machine_text, write_results

OUT = Path(__file__).resolve().parent / "results"
KINDS = (("segmenter", "segmenter"), ("member_box", "box-crop member"), ("member_whole", "whole-image member"))


def _clocks(networks: dict) -> dict[str, str]:
    """Per kind: summed seconds over its folds and final network, '(n networks, s starts)'."""
    out = {}
    for kind, name in KINDS:
        fits = [v for k, v in networks.items() if k.startswith(f"{kind}_") and v.get("seconds") is not None]
        if fits:
            out[name] = (f"{sum(f['seconds'] for f in fits):.0f} ({len(fits)} networks, "
                         f"{sum(f['starts'] for f in fits)} starts)")
    return out


def columns(results: Path) -> list[dict]:
    """One column per measured run: its label, source report, date, machine, stages, clocks, peak memory."""
    cols = []
    mg = json.loads((results / "train_minimias.json").read_text())
    cols.append({"run": "MG, mini-MIAS, 5 patient folds (119 findings; the members' final networks too)",
                 "source": "train_minimias.md",
                 "date": mg["date"], "machine": machine_text(mg["machine"]), "stages": mg["stage_seconds"],
                 "clocks": _clocks(mg.get("networks", {})), "peak_mb": mg["peak_rss_mb"]})
    fr = json.loads((results / "train_from.json").read_text())
    for key, label in (("from_source", "US, `--from` the two-site set shipped then, 100 cases of BUS-UCLM (a "
                                       "hospital it never saw)"),
                       ("local_only", "US, the same 100 cases from ImageNet")):
        r = fr["runs"][key]
        cols.append({"run": label, "source": "train_from.md", "date": fr["date"],
                     "machine": machine_text(fr["machine"]),
                     "stages": r["stage_seconds"], "clocks": {}, "peak_mb": r["peak_rss_mb"],
                     "total": r["seconds"]})
    ts = json.loads((results / "train_three_sites.json").read_text())
    cols.append({"run": "US, the shipped three-site set, `--folds site` + final (1354 findings, 442 lesion-free)",
                 "source": "train_three_sites.md", "date": ts["date"], "machine": machine_text(ts["machine"]),
                 "stages": ts["stage_seconds_last_start"], "clocks": _clocks(ts["networks"]),
                 "peak_mb": ts["peak_rss_mb"]})
    return cols


def markdown(cols: list[dict]) -> list[str]:
    stages = list(dict.fromkeys(k for c in cols for k in c["stages"]))
    clocks = list(dict.fromkeys(k for c in cols for k in c["clocks"]))
    head = "| | " + " | ".join(c["run"] for c in cols) + " |"
    md = ["# breastcadx train: time per stage and peak memory, CPU only", "",
          "Each column is one measured `breastcadx train` run, read from its own report (date and machine there and "
          "below); `python -m benchmarks.train_summary` collects them, nothing is retrained. Wall times in seconds.",
          "", head, "|---" * (len(cols) + 1) + "|",
          "| measured in | " + " | ".join(f"`{c['source']}`, {c['date'][:16]}" for c in cols) + " |",
          "| machine | " + " | ".join(c["machine"] for c in cols) + " |"]
    md += [f"| stage: {s} | " + " | ".join(f"{c['stages'][s]:.1f}" if s in c["stages"] else "-" for c in cols) + " |"
           for s in stages]
    md.append("| total of the run | " + " | ".join(f"{c['total']:.0f}" if "total" in c else "(resumed: see below)"
                                                  for c in cols) + " |")
    md += [f"| network training, {k}: seconds summed over every start | " +
           " | ".join(c["clocks"].get(k, "-") for c in cols) + " |" for k in clocks]
    md.append("| peak resident memory | " + " | ".join(f"{c['peak_mb']:.0f} MB" for c in cols) + " |")
    md += ["", "A resumed run's stage rows are its last start's (a network it found finished costs nothing there); "
           "its networks' own clocks, over every start, are the cost of training them. The fine-tune and the "
           "from-ImageNet run went in one start each: their stage rows are the whole cost (their segmenter is the "
           "source's or none: 0 s). The mammography set's segmenter trained 40 epochs per fold; its members are "
           "held at weight 0 by train's chance rule, but were trained (their clocks count).", ""]
    return md


def main() -> None:
    cols = columns(OUT)
    report = {"runs": cols}
    body = markdown(cols)
    write_results(OUT, "train", report, "\n".join(body) + "\n")


if __name__ == "__main__":
    main()
