"""`breastcadx adapt --fine-tune`: the site's labelled lesions fine-tune the set (`train --from`), the profile keeps
the fine-tuned set only where, out of fold on those lesions, it is no worse than the set as it is, and carries it.

The site: the committed mini-MIAS films, each also mirrored (a second view of the same woman: a patient group of
two), analysed by `breastcadx batch` with the mammography set of conftest (no segmenter: the batch's box locates
each finding); 24 lesions of 12 women, one mirrored film refused by the set's input guard.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageOps

from BreastCADxLib.analysis.registry import model_set_fingerprint
from BreastCADxLib.analysis.site import SiteProfileError, carried_model_set, load_site_profile
from BreastCADxLib.results import site_fine_tune
from BreastCADxLib.results.adapt import AdaptError, adapt
from BreastCADxLib.train import fine_tune
from BreastCADxLib.train.fine_tune import SiteFineTune
from conftest import MG_DATA


def cli(*args):
    return subprocess.run([sys.executable, "-m", "BreastCADxLib.cli.main", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def site(mg_set, tmp_path_factory):
    """The site's batch manifest (film + box), labels (patient as group) and finished batch."""
    folder = tmp_path_factory.mktemp("mg_site")
    manifest, labels = [["case_id", "image", "roi"]], [["case_id", "label", "group"]]
    for r in csv.DictReader(open(MG_DATA / "findings.csv", newline="")):
        if r["label"] == "normal":
            continue
        film = Image.open(MG_DATA / r["image"])
        cx, cy, rad = map(float, r["circle"].split(","))
        m = max(rad, 6.0) * 1.1
        for view, img, x in (("a", film, cx), ("b", ImageOps.mirror(film), film.width - 1 - cx)):
            img.save(folder / f"{r['case_id']}{view}.png")
            manifest.append([f"{r['case_id']}{view}", f"{r['case_id']}{view}.png",
                             f"{x - m:.0f},{cy - m:.0f},{x + m:.0f},{cy + m:.0f}"])
            labels.append([f"{r['case_id']}{view}", r["label"], r["patient"]])
    csv.writer(open(folder / "manifest.csv", "w", newline="")).writerows(manifest)
    csv.writer(open(folder / "labels.csv", "w", newline="")).writerows(labels)
    cli("batch", str(folder / "manifest.csv"), "--model-set", str(mg_set), "--out", str(folder / "batch"))
    assert (folder / "batch" / "results.csv").is_file()
    return folder


@pytest.fixture(scope="module")
def tuned(site, mg_set):
    """A fine-tune stopped by its time box, then the same call going on to the profile."""
    out = site / "profile"
    args = (site / "batch" / "results.csv", site / "labels.csv", out)
    with pytest.raises(AdaptError, match="same `breastcadx adapt` command") as stopped:
        adapt(*args, command="test", fine_tune=SiteFineTune(site / "manifest.csv", max_minutes=1e-6, member_epochs=1))
    with pytest.raises(SiteProfileError, match="not a site profile"):
        load_site_profile(out)  # a stopped run is not a profile yet
    body = adapt(*args, command="test", fine_tune=SiteFineTune(site / "manifest.csv", member_epochs=1))
    return out, body, stopped.value


def test_a_stopped_fine_tune_goes_on_and_leaves_only_the_profile(tuned, mg_set):
    out, body, stopped = tuned
    assert "features stage" in stopped.cause or "image-members" in stopped.cause
    assert not site_fine_tune.work_folder(out).exists()
    ft = body["fine_tune"]
    assert ft["from"]["sha256"] == model_set_fingerprint(str(mg_set)) and ft["lesions"] == 23
    names = {p.name for p in out.iterdir()}
    assert names == {"card.md", "site.json", site_fine_tune.FINE_TUNE_CV} | ({ft["model_set_folder"]} if ft["kept"]
                                                                             else set())
    load_site_profile(out)  # sealed, every listed file as written (the run record included)
    assert "Fine-tun" in (out / "card.md").read_text()


def test_the_fine_tuned_set_is_kept_only_where_it_is_no_worse_out_of_fold(tuned, site, mg_set):
    """The gate's figures are the fine-tuned set's out-of-fold probabilities (the run record) against the batch's
    own; here the set as it is was trained on these very films, so fine-tuning cannot beat it: the profile adapts
    the set as it is, fitted on the batch's probabilities."""
    from sklearn.metrics import roc_auc_score

    out, body, _ = tuned
    cv = json.loads((out / site_fine_tune.FINE_TUNE_CV).read_text())
    tuned_p = dict(zip(cv["case_ids"], site_fine_tune.set_scores(cv)["user"].values()))
    rows = {r["case_id"]: r for r in csv.DictReader(open(site / "batch" / "results.csv", newline=""))}
    labels = {r["case_id"]: r["label"] == "malignant" for r in csv.DictReader(open(site / "labels.csv"))}
    ids = [i for i in cv["case_ids"] if rows[i]["status"] == "ok"]
    y = np.array([labels[i] for i in ids])
    gate = body["fine_tune"]["gate"]
    assert gate["candidate"]["auc"] == pytest.approx(roc_auc_score(y, [tuned_p[i] for i in ids]))
    assert gate["base"]["auc"] == pytest.approx(roc_auc_score(y, [float(rows[i]["malignancy_probability"])
                                                                  for i in ids]))
    assert body["fine_tune"]["kept"] is False and gate["candidate"]["auc"] < gate["base"]["auc"]
    assert body["model_set"]["sha256"] == model_set_fingerprint(str(mg_set))
    assert load_site_profile(out, str(mg_set)).sha256 == body["content_sha256"]


def test_a_kept_fine_tune_travels_in_the_profile_and_is_used_with_it(site, mg_set, monkeypatch, tmp_path):
    """The kept path (the decision forced; its rule is tested above): the profile carries the new set and is made
    for it; with the set as it is it is refused naming the folder to pass; analyze uses both and names them; an
    altered file of the carried set is refused."""
    monkeypatch.setattr(fine_tune, "judge", lambda cases, tuned: (True, {"lesions": 0}))
    out = tmp_path / "kept"
    body = adapt(site / "batch" / "results.csv", site / "labels.csv", out, command="test",
                 fine_tune=SiteFineTune(site / "manifest.csv", member_epochs=1))
    carried = out / body["fine_tune"]["model_set_folder"]
    assert (carried / "modelset.json").is_file() and not (carried / ".work").exists()
    assert body["model_set"]["sha256"] == model_set_fingerprint(str(carried))
    assert json.loads((carried / "image_guard.json").read_text()) == json.loads(
        (mg_set / "image_guard.json").read_text())  # the source's guard, not one of 23 films
    with pytest.raises(SiteProfileError, match=f"carries its own fine-tuned model set.*--model-set {carried}"):
        load_site_profile(out, str(mg_set))
    assert carried_model_set(out) == carried and carried_model_set(site / "profile") is None  # the panel's lookup
    page_takes_the_carried_set(out, carried, tmp_path)
    film = site / "mdb023_1a.png"
    roi = next(r["roi"] for r in csv.DictReader(open(site / "manifest.csv")) if r["case_id"] == "mdb023_1a")
    r = cli("analyze", str(film), "--model-set", str(carried), "--site", str(out), "--roi", roi, "--out",
            str(tmp_path / "case"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "case" / "result.json").read_text())
    assert result["provenance"]["site"]["sha256"] == body["content_sha256"]
    assert result["provenance"]["model_set"] == str(carried)
    (carried / "lesion_cls_fusion.npz").write_bytes(b"altered")
    r = cli("analyze", str(film), "--model-set", str(carried), "--site", str(out), "--roi", roi, "--out",
            str(tmp_path / "case2"))
    assert r.returncode != 0 and "Traceback" not in r.stderr and "lesion_cls_fusion" in r.stderr


def page_takes_the_carried_set(profile, carried, tmp_path) -> None:
    """`serve`: choosing the profile on the page takes the set it carries too (the page started on the shipped
    set, for which the profile alone would be refused)."""
    import slicer

    from BreastCADxLib.scene import parameters as params
    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.web.access import DataRoots, OutputFolder
    from BreastCADxLib.web.session import ReviewSession

    roots = DataRoots([profile.parent])
    listing = roots.scan()
    assert [e.label for e in listing.model_sets] == [f"{profile.parent.name}/{profile.name}/{carried.name}"]
    scene = slicer.vtkMRMLScene()
    try:
        session = ReviewSession(WorkflowLogic(scene), None, roots, OutputFolder(tmp_path / "o"))
        session.set_site_profile(listing.site_profiles[0].ref)
        assert session.logic.model_set == str(carried.resolve())
        assert params.peek_value(scene, "siteProfile") == str(profile.resolve())
        assert session.model_set_label() == listing.model_sets[0].label
        assert session.model_set_ref() == listing.model_sets[0].ref  # the selector shows the carried set
    finally:
        scene.Clear(1)


def test_fine_tuning_is_refused_before_any_training_when_it_cannot_run(site, tmp_path):
    few = tmp_path / "few.csv"
    rows = list(csv.reader(open(site / "labels.csv")))
    csv.writer(open(few, "w", newline="")).writerows(rows[:1] + [r for r in rows[1:] if r[1] == "benign"]
                                                     + [r for r in rows[1:] if r[1] == "malignant"][:4])
    with pytest.raises(AdaptError, match="too few cases to fine-tune: 4 malignant"):
        adapt(site / "batch" / "results.csv", few, tmp_path / "p1", fine_tune=SiteFineTune(site / "manifest.csv"))
    assert not (tmp_path / "p1").exists()
    changed = tmp_path / "changed"  # the manifest points at an image the batch did not analyse
    changed.mkdir()
    lines = list(csv.reader(open(site / "manifest.csv")))
    for r in lines[1:]:
        r[1] = str(site / r[1])
    ImageOps.flip(Image.open(site / "mdb001_1a.png")).save(changed / "mdb001_1a.png")
    lines[1][1] = str(changed / "mdb001_1a.png")
    csv.writer(open(changed / "manifest.csv", "w", newline="")).writerows(lines)
    with pytest.raises(AdaptError, match="not the one the batch analysed") as e:
        adapt(site / "batch" / "results.csv", site / "labels.csv", tmp_path / "p2",
              fine_tune=SiteFineTune(changed / "manifest.csv"))
    assert e.value.path == str(changed / "mdb001_1a.png") and not (tmp_path / "p2").exists()
    import shutil

    other = tmp_path / "other_set_batch"  # a batch made with a set that is not here any more as it was
    shutil.copytree(site / "batch", other)
    for result in other.glob("*/result.json"):
        data = json.loads(result.read_text())
        data["batch"]["models_sha256"] = "0" * 64
        result.write_text(json.dumps(data))
    with pytest.raises(AdaptError, match="not here as the batch used it"):
        adapt(other / "results.csv", site / "labels.csv", tmp_path / "p3",
              fine_tune=SiteFineTune(site / "manifest.csv"))
    assert not (tmp_path / "p3").exists()
    r = cli("adapt", str(site / "batch" / "results.csv"), "--labels", str(site / "labels.csv"), "--out",
            str(site / "batch"), "--fine-tune", str(site / "manifest.csv"))  # an existing folder: never touched
    assert r.returncode != 0 and "never replaced" in r.stderr and "Traceback" not in r.stderr
