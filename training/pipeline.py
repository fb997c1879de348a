"""The README recipe's model sets as named stages: what each runs, what it reads, what it writes.

    python -m training.pipeline list                       # stages, their state (done / to do), their outputs
    python -m training.pipeline run [STAGE ...]            # the stages (and those they need) not done yet
    python -m training.pipeline run --dry-run              # the commands, nothing run
    python -m training.pipeline run --force guard          # a stage again, although done
    python -m training.pipeline verify                     # the cheap stages again into a temporary folder,
                                                           # compared file by file with the shipped set

Data folders are arguments (--busi, --busbra, --busuclm, --minimias), passed to every stage that reads images.
A stage is done when its outputs exist (a training run: when it wrote finished.json, training.common); a run cut
by its time box is resumed (--resume) by the next `run`, so the whole set is made over several sessions on a
2-core CPU. Every start, finish and duration goes to runs/pipeline.log. Test splits are never read here.
The intermediate layout (runs/site_pass, runs/site_features, runs/<run>) is the scripts' own; the models are
written to --models (default: the set's folder). The three-site set made this way shipped until 2026-12-06
(training.restore_set --commit 6d4427d brings it back to runs/recipe-three-site, where `verify` compares); the
shipped set since is made by one command, `breastcadx train ... --folds site` (README), and training.ship_set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from BreastCADxLib.analysis.registry import MODELS_DIR
from training.common import FINISHED
from training.data import BUSI_ONLY, DEFAULT_DATA, HELD_OUT_BUSI
from training.restore_set import RECIPE, TWO_SITE, TWO_SITE_COMMIT

RUNS = Path("runs")
LOG = RUNS / "pipeline.log"
SEG = ("--arch", "lite0", "--size", "256", "--lr", "1e-3", "--scanner-aug", "0.3", "--negative-crop-prob", "0.15",
       "--bf16")
ALL = "busi,busbra_l5,busuclm"
# site -> a segmenter trained without it; for BUS-UCLM the two-site set's own (restored from the last commit that
# shipped it: its segmenter run is not kept)
HELD_OUT = {"busi": "seg_BC", "busbra_l5": "seg_AC", "busuclm": "two-site"}
M3 = "0.05,0.1,0.15"


def classifier_args(sites: str, members: str) -> tuple[str, ...]:
    """The three-site design's feature bundle on `sites`, fused with the box and whole-image runs `members`."""
    return ("--design", "rad_all+desc+deep_mask", "--c", "0.01", "--sites", sites, "--box-run", f"runs/box_{members}",
            "--box-weight", "0.75", "--box-margins", M3, "--whole-run", f"runs/whole_{members}", "--whole-weight",
            "0.2", "--calibration", "identity", "--cross-site-from", "training/classification/two_site_box_card.json",
            "--selection", "benchmarks/results/leave_site_out_design3.json")


CLS = classifier_args(ALL, "ABC")


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    args: tuple[str, ...]
    outputs: tuple[str, ...]  # "{models}/..." is the models folder
    needs: tuple[str, ...] = ()
    data: bool = True  # takes the data folder arguments
    run_dir: str = ""  # a resumable training run: done when it has written its finished marker
    cheap: bool = False  # a ship stage of minutes on 2 cores: `verify` reruns it
    models_arg: bool = False  # takes --models

    def done(self, models: Path) -> bool:
        if self.run_dir:
            return (Path(self.run_dir) / FINISHED).is_file()
        return all(Path(o.format(models=models)).exists() for o in self.outputs)


def _train(name: str, sites: str, epochs: int) -> Stage:
    out = f"runs/{name}"
    return Stage(name, "training.segmentation.train", (*SEG, "--epochs", str(epochs), "--sites", sites, "--out", out,
                                                       "--time-limit-min", "45"),
                 (f"{out}/model.pt", f"{out}/best.json"), run_dir=out)


def _pass(run: str, site: str) -> Stage:
    where = f"set:{TWO_SITE}" if run == "two-site" else f"runs/{run}"
    return Stage(f"pass_{run}_{site}", "training.segmentation.site_pass",
                 ("--run", where, "--site", site, "--roles", "train,val"),
                 (f"runs/site_pass/{run}__{site}__train+val.npz",), needs=(run,))


def _features(site: str, run: str | None = None) -> Stage:
    if run is None:
        return Stage(f"features_{site}", "training.classification.site_features", ("--site", site),
                     (f"runs/site_features/{site}__reference.npz", f"runs/site_features/{site}__perturbed.npz"))
    return Stage(f"features_{site}_{run}", "training.classification.site_features",
                 ("--site", site, "--pass", f"runs/site_pass/{run}__{site}__train+val.npz"),
                 (f"runs/site_features/{site}__expect__{run}.npz", f"runs/site_features/{site}__roi__{run}.npz"),
                 needs=(f"pass_{run}_{site}",))


def _member(name: str, view: str, sites: str = ALL) -> Stage:
    out = f"runs/{name}"
    extra = ("--view", "whole", "--eval-margins", "0") if view == "whole" else ()
    return Stage(name, "training.classification.box_cnn", ("--train", sites, "--score", "none", "--bf16", *extra,
                                                           "--time-limit-min", "45", "--out", out),
                 (f"{out}/model.pt",), run_dir=out)


def three_site() -> list[Stage]:
    sites = ("busi", "busbra_l5", "busuclm")
    own = ",".join(f"{s}=seg_ABC" for s in sites)
    stages = [_train("seg_ABC", ALL, 12), _train("seg_BC", "busbra_l5,busuclm", 8),
              _train("seg_AC", "busi,busuclm", 8),
              Stage("two-site", "training.restore_set", ("--commit", TWO_SITE_COMMIT, "--out", str(TWO_SITE)),
                    (f"{TWO_SITE}/modelset.json",), data=False)]
    stages += [_pass(run, site) for site, run in HELD_OUT.items()]
    stages += [_pass("seg_ABC", s) for s in sites]
    stages.append(Stage("presence", "training.segmentation.tune_presence",
                        tuple(f"runs/site_pass/{run}__{site}__train+val.npz" for site, run in HELD_OUT.items())
                        + ("--out", "runs/presence_three.json"), ("runs/presence_three.json",),
                        needs=tuple(f"pass_{run}_{site}" for site, run in HELD_OUT.items())))
    stages.append(Stage("ship_segmenter", "training.segmentation.ship_sites",
                        ("--run", "runs/seg_ABC", "--presence", "runs/presence_three.json"),
                        ("{models}/lesion_seg_lite0.pt",), needs=("seg_ABC", "presence"), data=False,
                        cheap=True, models_arg=True))
    stages += [_features(s) for s in sites]
    stages += [_features(s, "seg_ABC") for s in sites] + [_features(s, run) for s, run in HELD_OUT.items()]
    stages.append(Stage("design", "training.classification.leave_site_out",
                        ("--passes", ",".join(f"{s}={r}" for s, r in HELD_OUT.items()), "--out", "runs/lso_cls3"),
                        ("runs/lso_cls3/designs.json",),
                        needs=tuple(f"features_{s}" for s in sites)
                        + tuple(f"features_{s}_{r}" for s, r in HELD_OUT.items()), data=False))
    stages += [_member("box_ABC", "box"), _member("whole_ABC", "whole")]
    stages.append(Stage("guard", "training.fit_guard", ("--sites", ALL), ("{models}/image_guard.npz",),
                        cheap=True, models_arg=True))
    cls_needs = ("box_ABC", "whole_ABC", *(f"features_{s}" for s in sites), *(f"features_{s}_seg_ABC" for s in sites))
    stages.append(Stage("ship_classifier_auto", "training.classification.ship_sites",
                        (*CLS, "--fit-masks", "reference,perturbed,expect", "--fit-pass", own,
                         "--id", "lesion_cls_fusion_auto"), ("{models}/lesion_cls_fusion_auto.npz",),
                        needs=cls_needs, data=False, cheap=True, models_arg=True))
    stages.append(Stage("ship_classifier", "training.classification.ship_sites",
                        (*CLS, "--automatic-masks", "lesion_cls_fusion_auto"), ("{models}/lesion_cls_fusion.npz",),
                        needs=(*cls_needs, "ship_classifier_auto"), data=False, cheap=True, models_arg=True))
    return stages


# held-out rotations of the fused design: name -> (held-out site, training sites); the held-out site's segmenter
# pass is HELD_OUT's
ROTATIONS = {"BC": ("busi", "busbra_l5,busuclm"), "AC": ("busbra_l5", "busi,busuclm"),
             "AB": ("busuclm", "busi,busbra_l5")}


def rotations() -> list[Stage]:
    """The three-site stages the rotations share, then per rotation a box-crop and a whole-image member trained
    without the held-out site and scored on its non-test rows (box_soup), and the fusion check over the three
    (training.classification.rotation_fusion -> runs/rotation_fusion, copied to benchmarks/results)."""
    stages, fusion_args, needs = [], [], []
    for n, (site, sites) in ROTATIONS.items():
        seg = HELD_OUT[site]
        pass_file = f"runs/site_pass/{seg}__{site}__train+val.npz"
        for view, kind, extra in (("box", "m3", ("--eval-margins", "0.05,0.1,0.15")),
                                  ("whole", "s", ("--view", "whole", "--eval-margins", "0"))):
            stages.append(_member(f"{view}_{n}", view, sites))
            out = f"runs/{view}_{n}_{kind}"
            stages.append(Stage(f"{view}_{n}_{kind}", "training.classification.box_soup",
                                ("--runs", f"runs/{view}_{n}", "--score", site, "--pass", pass_file, *extra,
                                 "--out", out), (f"{out}/scores.npz",), needs=(f"{view}_{n}", f"pass_{seg}_{site}")))
        fusion_args += ["--rotation", f"{site}=runs/box_{n}_m3:{seg}", "--whole", f"{site}=runs/whole_{n}_s"]
        needs += [f"box_{n}_m3", f"whole_{n}_s", f"features_{site}_{seg}"]
    needs += [f"features_{s}" for s in ("busi", "busbra_l5", "busuclm")]
    stages.append(Stage("rotation_fusion", "training.classification.rotation_fusion",
                        (*fusion_args, "--out", "runs/rotation_fusion"), ("runs/rotation_fusion/rotation_fusion.md",),
                        needs=tuple(needs), data=False))
    names = {t.name for t in stages}
    stages += [s for s in held_out_set_bc() if s.name not in names]
    # presence learned from two sites' lesion-free views, judged at the third (the sites with lesion-free views)
    pres = ("--view", "whole", "--target", "presence", "--eval-margins", "0", "--bf16", "--epochs", "8",
            "--score-every", "4", "--time-limit-min", "40")
    for n, site in (("BC", "busi"), ("AB", "busuclm")):
        stages.append(Stage(f"pres_{n}", "training.classification.box_cnn",
                            (*pres, "--train", ROTATIONS[n][1], "--score", site, "--out", f"runs/pres_{n}"),
                            (f"runs/pres_{n}/scores.npz",), run_dir=f"runs/pres_{n}"))
    stages.append(Stage("presence_cnn", "benchmarks.presence_cnn_held_out",
                        ("busi=runs/pres_BC:runs/site_pass/seg_BC__busi__train+val.npz",
                         "busuclm=runs/pres_AB:runs/site_pass/two-site__busuclm__train+val.npz",
                         "--out", "runs/presence_cnn"), ("runs/presence_cnn/presence_cnn_held_out.md",),
                        needs=("pres_BC", "pres_AB", "pass_seg_BC_busi", "pass_two-site_busuclm"), data=False))
    return order(three_site() + stages, ["rotation_fusion", "set_BC", "presence_cnn"])  # with what they need


def busi_only() -> list[Stage]:
    """The busi-only set (BUSI alone: the design's single-hospital baseline, a training output kept in
    Testing/Data/model_sets, not a product option), as it was made: each site's segmenter scored on the other site
    for the presence threshold; the box-crop and whole-image members, each site -> the other, for the fusion
    weights (box_fusion); the ship stages with the commands its cards record."""
    lp = "runs/site_pass/busi-only__busbra_l5__train+val.npz"  # the shipped busi-only segmenter over L5
    bp = "runs/site_pass/seg_B__busi__train+val.npz"  # the L5-only segmenter over BUSI
    own = f"set:{BUSI_ONLY}"

    def member(name: str, *args: str, needs: tuple[str, ...] = ()) -> Stage:
        return Stage(name, "training.classification.box_cnn", (*args, "--bf16", "--time-limit-min", "45",
                                                                "--out", f"runs/{name}"),
                     (f"runs/{name}/model.pt",), needs=needs, run_dir=f"runs/{name}")

    def soup(name: str, run: str, site: str, pass_file: str, *extra: str, needs: tuple[str, ...]) -> Stage:
        return Stage(name, "training.classification.box_soup",
                     ("--runs", f"runs/{run}", "--score", site, "--pass", pass_file, *extra, "--out", f"runs/{name}"),
                     (f"runs/{name}/scores.npz",), needs=(run, *needs))

    def own_pass(site: str) -> Stage:
        return Stage(f"pass_busi-only_{site}", "training.segmentation.site_pass",
                     ("--run", own, "--site", site, "--roles", "train,val"),
                     (f"runs/site_pass/busi-only__{site}__train+val.npz",), needs=("ship_segmenter",))

    whole = ("--view", "whole", "--eval-margins", "0")
    stages = [_train("seg_A", "busi", 20), _train("seg_B", "busbra_l5", 8),
              _pass("seg_A", "busbra_l5"), _pass("seg_B", "busi"), _pass("seg_B", "busbra_l5"),
              Stage("presence", "training.segmentation.tune_presence",
                    (bp, "runs/site_pass/seg_A__busbra_l5__train+val.npz", "--out", "runs/presence.json"),
                    ("runs/presence.json",), needs=("pass_seg_A_busbra_l5", "pass_seg_B_busi")),
              Stage("ship_segmenter", "training.segmentation.ship_sites",
                    ("--run", "runs/seg_A", "--presence", "runs/presence.json"), ("{models}/lesion_seg_lite0.pt",),
                    needs=("seg_A", "presence"), data=False, cheap=True, models_arg=True),
              Stage("guard", "training.fit_guard", ("--sites", "busi"), ("{models}/image_guard.npz",), cheap=True,
                    models_arg=True),
              own_pass("busbra_l5"), own_pass("busi"),
              _features("busi"), _features("busbra_l5"), _features("busbra_l5", "busi-only"),
              _features("busi", "seg_B"), _features("busi", "busi-only"), _features("busbra_l5", "seg_B"),
              member("box_A", "--train", "busi", "--score", "busbra_l5", "--pass", lp,
                     needs=("pass_busi-only_busbra_l5",)),
              soup("box_A_m3", "box_A", "busbra_l5", lp, "--eval-margins", M3, needs=()),
              member("box_B", "--train", "busbra_l5", "--score", "busi", "--pass", bp, "--eval-margins", M3,
                     needs=("pass_seg_B_busi",)),
              member("whole_A", *whole, "--train", "busi", "--score", "busbra_l5"),
              member("whole_B", *whole, "--train", "busbra_l5", "--score", "busi"),
              member("box_A_train", "--train", "busi", "--train-roles", "train", "--score", "none"),
              soup("box_A_train_m3", "box_A_train", "busi", bp, "--eval-margins", M3, needs=("pass_seg_B_busi",)),
              member("whole_A_train", *whole, "--train", "busi", "--train-roles", "train", "--score", "busi",
                     "--score-roles", "val")]
    stages.append(Stage("box_fusion", "training.classification.box_fusion",
                        ("--box-a", "runs/box_A_m3", "--box-b", "runs/box_B", "--pass-b", "busi-only",
                         "--fit-masks", "reference,perturbed,expect", "--drawn-fit-masks", "reference,perturbed",
                         "--fit-pass", "busi=busi-only,busbra_l5=seg_B", "--whole-a", "runs/whole_A", "--whole-b",
                         "runs/whole_B", "--w-whole", "0", "0.2", "--calibration-w-whole", "0.2",
                         "--out", "runs/box_fusion_prov"), ("runs/box_fusion_prov/box_fusion.json",),
                        needs=("box_A_m3", "box_B", "whole_A", "whole_B", "features_busi", "features_busbra_l5",
                               "features_busbra_l5_busi-only", "features_busi_seg_B", "features_busi_busi-only",
                               "features_busbra_l5_seg_B"), data=False))
    ship = ("--design", "rad_all+desc+deep_mask", "--c", "0.1", "--sites", "busi", "--box-run", "runs/box_A",
            "--box-weight", "0.75", "--box-margins", M3, "--box-val-run", "runs/box_A_train_m3", "--whole-run",
            "runs/whole_A", "--whole-weight", "0.2", "--box-fusion", "runs/box_fusion_prov", "--whole-val-run",
            "runs/whole_A_train")
    needs = ("box_A", "whole_A", "box_A_train_m3", "whole_A_train", "box_fusion", "features_busi",
             "features_busi_busi-only")
    stages.append(Stage("ship_classifier_auto", "training.classification.ship_sites",
                        (*ship, "--fit-masks", "reference,perturbed,expect", "--fit-pass", "busi=busi-only",
                         "--calibration", "identity", "--id", "lesion_cls_fusion_auto"),
                        ("{models}/lesion_cls_fusion_auto.npz",), needs=needs, data=False, cheap=True,
                        models_arg=True))
    stages.append(Stage("ship_classifier", "training.classification.ship_sites",
                        (*ship, "--calibration", "identity", "--automatic-masks", "lesion_cls_fusion_auto"),
                        ("{models}/lesion_cls_fusion.npz",), needs=(*needs, "ship_classifier_auto"), data=False,
                        cheap=True, models_arg=True))
    return stages


def held_out_set_bc() -> list[Stage]:
    """The three-site design trained without BUSI (B+C, into runs/held_out/BC): BUSI as a hospital its models never
    saw, for `breastcadx adapt` (benchmarks.site_adaptation). Its presence threshold comes from passes over L5 and
    BUS-UCLM only (no BUSI image); the feature design is the three-rotation choice (leave_site_out_design3.json)."""
    out, sites = str(HELD_OUT_BUSI), "busbra_l5,busuclm"
    held = ("runs/site_pass/seg_AC__busbra_l5__train+val.npz", "runs/site_pass/two-site__busuclm__train+val.npz")
    cls = (*classifier_args(sites, "BC"), "--models", out)
    feats = tuple(f"features_{s}{k}" for s in ("busbra_l5", "busuclm") for k in ("", "_seg_BC"))
    return [_pass("seg_BC", "busbra_l5"), _pass("seg_BC", "busuclm"),
            _features("busbra_l5", "seg_BC"), _features("busuclm", "seg_BC"),
            Stage("presence_BC", "training.segmentation.tune_presence", (*held, "--out", "runs/presence_BC.json"),
                  ("runs/presence_BC.json",), needs=("pass_seg_AC_busbra_l5", "pass_two-site_busuclm")),
            Stage("set_BC_segmenter", "training.segmentation.ship_sites",
                  ("--run", "runs/seg_BC", "--presence", "runs/presence_BC.json", "--models", out),
                  (f"{out}/lesion_seg_lite0.pt",), needs=("seg_BC", "presence_BC"), data=False),
            Stage("set_BC_guard", "training.fit_guard", ("--sites", sites, "--models", out, "--results",
                                                          f"{out}/results"),
                  (f"{out}/image_guard.npz", f"{out}/results/input_guard_BC.md")),
            Stage("set_BC_classifier_auto", "training.classification.ship_sites",
                  (*cls, "--fit-masks", "reference,perturbed,expect", "--fit-pass",
                   "busbra_l5=seg_BC,busuclm=seg_BC", "--id", "lesion_cls_fusion_auto"),
                  (f"{out}/lesion_cls_fusion_auto.npz",), needs=("box_BC", "whole_BC", *feats), data=False),
            Stage("set_BC", "training.classification.ship_sites", (*cls, "--automatic-masks", "lesion_cls_fusion_auto"),
                  (f"{out}/lesion_cls_fusion.npz",),
                  needs=("set_BC_segmenter", "set_BC_guard", "set_BC_classifier_auto"), data=False)]


def command(stage: Stage, args: argparse.Namespace, models: Path) -> list[str]:
    cmd = [sys.executable, "-m", stage.module, *stage.args]
    if stage.data:
        cmd += ["--busi", str(args.busi), "--busbra", str(args.busbra), "--busuclm", str(args.busuclm)]
        if stage.module == "training.fit_guard":
            cmd += ["--minimias", str(args.minimias)]
    if stage.models_arg and models != MODELS_DIR:
        cmd += ["--models", str(models)]
        if stage.module == "training.fit_guard":
            cmd += ["--results", str(models / "results")]  # a verification run leaves the benchmarks alone
    if stage.run_dir and (Path(stage.run_dir) / "checkpoint.pt").exists():
        cmd.append("--resume")
    return cmd


def order(stages: list[Stage], wanted: list[str], done: Callable[[Stage], bool] | None = None,
          forced: tuple[str, ...] = ()) -> list[Stage]:
    """The wanted stages (default all) and what they need, in an order that runs each after its needs. With `done`:
    a stage already made (and not forced) needs nothing made again (its inputs are not rebuilt)."""
    by = {s.name: s for s in stages}
    unknown = [w for w in wanted if w not in by]
    if unknown:
        raise SystemExit(f"unknown stage {', '.join(unknown)}: `python -m training.pipeline list` names them")
    out: list[Stage] = []

    def visit(name: str) -> None:
        if any(s.name == name for s in out):
            return
        if done is None or name in forced or not done(by[name]):
            for n in by[name].needs:
                visit(n)
        out.append(by[name])

    for name in wanted or [s.name for s in stages]:
        visit(name)
    return out


def log(text: str) -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    line = f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {text}"
    print(line, flush=True)
    with open(LOG, "a") as f:
        f.write(line + "\n")


def run(stages: list[Stage], args: argparse.Namespace, models: Path, force: tuple[str, ...] | bool = False) -> int:
    """Each stage not done yet, in order; `force`: these stages (True: all) run again even when done."""
    for stage in stages:
        if stage.done(models) and not (force is True or stage.name in (force or ())):
            continue
        cmd = command(stage, args, models)
        if args.dry_run:
            print(" ".join(cmd[1:]))
            continue
        log(f"start {stage.name}: {' '.join(cmd[2:])}")
        t0 = time.time()
        rc = subprocess.call(cmd)
        log(f"{'finished' if rc == 0 else f'failed (exit {rc})'} {stage.name} in {(time.time() - t0) / 60:.1f} min")
        if rc != 0:
            return rc
        if stage.run_dir and not stage.done(models):
            log(f"{stage.name} stopped at its time box: `run` again resumes it")
            return 0
    return 0


def same(a: Path, b: Path) -> str:
    """How a file made again (in a.parent) compares with the shipped one (b)."""
    if a.read_bytes() == b.read_bytes():
        return "identical"
    if a.suffix == ".npz":
        x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
        if set(x.files) != set(y.files):
            return "differs: other arrays"
        worst = max(float(np.max(np.abs(x[k].astype(float) - y[k].astype(float)))) if x[k].size else 0.0
                    for k in x.files)
        return f"same arrays within {worst:.1e}" if worst < 1e-6 else f"differs: max |d| {worst:.2e}"
    if a.suffix == ".json":
        def strip(d):  # what differs by the day and the folder it was made in, and hashes compared above
            if isinstance(d, dict):
                return {k: strip(v) for k, v in d.items() if k not in ("exported", "date", "sha256", "files",
                                                                       "seconds", "machine")}
            if isinstance(d, str):
                return d.replace(f" --models {a.parent}", "").replace(f" --results {a.parent / 'results'}", "") \
                    .replace(f"input_guard_{a.parent.name}", "input_guard")
            return [strip(v) for v in d] if isinstance(d, list) else d
        return "same content (dates, machine and hashes aside)" if \
            strip(json.loads(a.read_text())) == strip(json.loads(b.read_text())) else "differs"
    if a.suffix == ".pt":
        import torch

        x, y = (torch.load(f, map_location="cpu", weights_only=True) for f in (a, b))
        if x.keys() != y.keys():
            return "differs: other tensors"
        return "same tensors" if all(torch.equal(x[k], y[k]) for k in x) else "differs: other values"
    return "differs"


def verify(stages: list[Stage], args: argparse.Namespace) -> int:
    """The ship stages (their training runs and features already made) again into an empty folder; every file
    they write is compared with the shipped one."""
    cheap = [s for s in stages if s.cheap and s.models_arg]
    shipped = args.models
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp)
        rc = run(cheap, args, models, force=True)
        if rc:
            return rc
        rows = [(f.name, same(f, shipped / f.name) if (shipped / f.name).is_file() else "not shipped")
                for f in sorted(models.iterdir()) if f.is_file() and f.suffix in (".json", ".npz", ".pt")]
    bad = [r for r in rows if not r[1].startswith(("identical", "same"))]
    for name, how in rows:
        print(f"{name:34s} {how}")
    verdict = f"{len(rows) - len(bad)} of {len(rows)} files made again match the shipped set"
    print(verdict)
    if args.report:
        from benchmarks.machine import machine

        m = machine()
        args.report.write_text("\n".join([
            "# The shipped set made again by its pipeline", "",
            f"Date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}  ",
            f"Machine: {m['cpu']}, {m['cores']} cores (CPU only)  ",
            "Made by `python -m training.pipeline verify --report " + str(args.report) + "`: the ship stages ("
            + ", ".join(f"`{s.name}`" for s in cheap) + ") again into an empty folder from the training runs and "
            f"features already made; each file compared with `{os.path.relpath(shipped)}` (cards: the same content "
            "apart from dates, machine, hashes and the folder written to; weights and arrays: byte for byte or "
            "tensor for tensor).", "", "| file | made again |", "|---|---|",
            *(f"| {name} | {how} |" for name, how in rows), "", verdict, ""]))
    return 1 if bad else 0


SETS = {"three-site": three_site, "rotations": rotations, "busi-only": busi_only}
SET_MODELS = {"busi-only": BUSI_ONLY, "three-site": RECIPE}  # where a set's ship stages write by default


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="stages: `python -m training.pipeline list`")
    ap.add_argument("action", choices=["list", "run", "verify"])
    ap.add_argument("stages", nargs="*", help="run: only these stages (and what they need)")
    ap.add_argument("--set", default="three-site", choices=sorted(SETS))
    ap.add_argument("--models", type=Path, help="where the ship stages write the set (default: the set's folder)")
    ap.add_argument("--busi", type=Path, default=DEFAULT_DATA["busi"])
    ap.add_argument("--busbra", type=Path, default=DEFAULT_DATA["busbra_l5"])
    ap.add_argument("--busuclm", type=Path, default=DEFAULT_DATA["busuclm"])
    ap.add_argument("--minimias", type=Path, default=Path("../data/minimias"))
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--force", action="store_true", help="run: the named stages again even when done")
    ap.add_argument("--report", type=Path, help="verify: also write the comparison here (markdown)")
    args = ap.parse_intermixed_args()
    args.models = args.models or SET_MODELS.get(args.set, MODELS_DIR)
    stages = SETS[args.set]()
    if args.action == "list":
        for s in stages:
            state = "done" if s.done(args.models) else "to do"
            outputs = ", ".join(o.format(models=args.models) for o in s.outputs)
            print(f"{s.name:28s} {state:6s} {s.module:42s} -> {outputs}")
        return 0
    if args.action == "verify":
        return verify(stages, args)
    forced = tuple(args.stages) if args.force else ()
    todo = order(stages, args.stages, lambda st: st.done(args.models), forced)
    return run(todo, args, args.models, forced or False)


if __name__ == "__main__":
    raise SystemExit(main())
