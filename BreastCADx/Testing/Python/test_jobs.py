"""Background-job seam: the job folder (names defined once) and the in-process runner (same worker code)."""

import numpy as np

from BreastCADxLib.image import Image
from BreastCADxLib.io import load_image
from BreastCADxLib.scene.jobs import DONE, FAILED, JobFolder
from BreastCADxLib.scene.worker import InProcessRunner


def test_job_folder_inputs_keep_spacing_and_modality_without_a_side_file(tmp_path):
    job = JobFolder(tmp_path / "job")
    job.root.mkdir()
    image = Image(array=np.arange(40 * 50, dtype=np.uint8).reshape(1, 40, 50), spacing=(0.1, 0.2, 1.0),
                  spacing_known=True, modality="US")
    job.write_inputs(image, np.ones((1, 40, 50), bool))
    back = load_image(job.image)
    assert back.spacing_known and back.modality == "US" and np.allclose(back.spacing[:2], (0.1, 0.2))
    assert sorted(p.name for p in job.root.iterdir()) == ["image.nrrd", "mask.nrrd"]
    job.discard()
    assert not job.root.exists()


def test_in_process_runner_reports_progress_results_and_errors(tmp_path):
    good = JobFolder(tmp_path / "good")
    good.root.mkdir()
    sample = load_image(__import__("conftest").MODULE_DIR / "Testing" / "Data" / "busi" / "benign_004.png")
    good.write_inputs(sample)
    seen = []
    task = InProcessRunner().start("segment", good, ["--device", "cpu"], lambda f, m: seen.append(f))
    assert task.poll() == DONE and seen[0] == 0.0 and seen[-1] == 1.0 and good.out_mask.exists()
    bad = JobFolder(tmp_path / "bad")
    bad.root.mkdir()
    bad.write_inputs(Image(array=np.zeros((1, 8, 8), np.uint8)))
    task = InProcessRunner().start("segment", bad, ["--device", "cpu"])
    assert task.poll() == FAILED and "the image is blank" in task.error  # the input guard, before any model
