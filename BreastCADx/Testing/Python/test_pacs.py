"""PACS round trip against a real Orthanc (Debian orthanc + orthanc-dicomweb) on loopback, and network failures."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

from BreastCADxLib.cli.main import main
from BreastCADxLib.io import load_image, load_mask
from BreastCADxLib.io.dicomweb import PASSWORD_ENV, Pacs, PacsConfig, PacsError
from BreastCADxLib.results.dicom_export import read_seg_mask, read_sr_summary
from conftest import PACS_USER as USER
from conftest import free_port


def test_query_analyze_store_and_round_trip(orthanc, password, sample_dicom, tmp_path, capsys):
    pacs = Pacs(PacsConfig(orthanc, username=USER))
    pacs.store([pydicom.dcmread(sample_dicom)])
    src = pydicom.dcmread(sample_dicom)
    studies = pacs.query_studies(patient_id=src.PatientID)
    assert [s["StudyInstanceUID"] for s in studies] == [src.StudyInstanceUID]
    assert studies[0]["ModalitiesInStudy"] == "US"

    out = tmp_path / "case"
    common = ["--url", orthanc, "--user", USER]
    assert main(["pacs", "analyze", *common, "--study", src.StudyInstanceUID, "--out", str(out), "--store"]) == 0
    assert "stored SEG + SR + overlay" in capsys.readouterr().out
    result = json.loads((out / "result.json").read_text())

    series = {s["Modality"]: s["SeriesInstanceUID"] for s in pacs.query_series(src.StudyInstanceUID)}
    assert set(series) == {"US", "SEG", "SR", "OT"}  # OT: the result overlay (Secondary Capture)
    seg_dir = pacs.retrieve_series(src.StudyInstanceUID, series["SEG"], tmp_path / "seg")
    sr_dir = pacs.retrieve_series(src.StudyInstanceUID, series["SR"], tmp_path / "sr")
    image = load_image(sample_dicom)
    mask_back = read_seg_mask(next(seg_dir.glob("*.dcm")), image)
    assert np.array_equal(mask_back, load_mask(out / "mask.nrrd", image))
    summary = read_sr_summary(next(sr_dir.glob("*.dcm")))
    assert summary["probability"] == pytest.approx(result["malignancy_probability"], abs=1e-12)
    assert summary["birads_suggestion"] == result["birads_suggestion"]

    # analysing the study again picks the source series, not our stored overlay, and refuses to overwrite
    assert main(["pacs", "analyze", *common, "--study", src.StudyInstanceUID, "--out", str(tmp_path / "again"),
                 "--expect-lesion"]) == 0
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert again["malignancy_probability"] == result["malignancy_probability"]  # confident: the flag changes nothing
    assert not any(f["code"] == "low_confidence_segmentation" for f in again["flags"])
    assert main(["pacs", "analyze", *common, "--study", src.StudyInstanceUID, "--out", str(out)]) == 2
    assert "earlier result" in capsys.readouterr().err
    assert json.loads((out / "result.json").read_text()) == result  # the first run's outputs are untouched
    # the CLI query lists the study's series
    assert main(["pacs", "query", *common, "--study", src.StudyInstanceUID, "--json"]) == 0
    assert {s["Modality"] for s in json.loads(capsys.readouterr().out)} == {"US", "SEG", "SR", "OT"}


def _case(folder: Path, dicom: Path, image) -> dict:
    """What a door wrote, minus what names the door (source, timings, batch bookkeeping)."""
    from PIL import Image as PILImage

    result = json.loads((folder / "result.json").read_text())
    for key in ("source", "seconds", "files", "batch"):
        result.pop(key, None)
    sr = read_sr_summary(dicom / "sr.dcm")
    sr.pop("text")
    return {"result": result, "mask": load_mask(folder / "mask.nrrd", image),
            "heatmap": load_image(folder / "heatmap.nrrd").array,
            "overlay": np.asarray(PILImage.open(folder / "overlay.png")),
            "seg": read_seg_mask(dicom / "seg.dcm", image), "sr": sr,
            "sc": pydicom.dcmread(dicom / "overlay.dcm").pixel_array}


def test_the_same_case_gives_the_same_files_from_every_door(orthanc, password, sample_dicom, tmp_path, capsys):
    """analyze, batch, pacs analyze and the Slicer logic all go through the one case writer."""
    slicer = pytest.importorskip("slicer")
    from BreastCADxLib.cli.batch import BatchOptions, run_batch
    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.scene.worker import InProcessRunner

    image = load_image(sample_dicom)
    assert main(["analyze", str(sample_dicom), "--out", str(tmp_path / "cli"), "--dicom-out",
                 str(tmp_path / "cli" / "dicom"), "--heatmap"]) == 0  # the panel computes the heatmap too
    doors = {"cli": _case(tmp_path / "cli", tmp_path / "cli" / "dicom", image)}

    Pacs(PacsConfig(orthanc, username=USER)).store([pydicom.dcmread(sample_dicom)])
    study = pydicom.dcmread(sample_dicom).StudyInstanceUID
    assert main(["pacs", "analyze", "--url", orthanc, "--user", USER, "--study", study, "--out",
                 str(tmp_path / "pacs"), "--heatmap"]) == 0
    doors["pacs"] = _case(tmp_path / "pacs", tmp_path / "pacs" / "dicom", image)

    shutil.copy(sample_dicom, tmp_path / "s.dcm")
    (tmp_path / "manifest.csv").write_text("case_id,image\ns,s.dcm\n")
    assert run_batch(tmp_path / "manifest.csv", tmp_path / "batch", BatchOptions(heatmap=True))[0]["status"] == "ok"
    scene = slicer.vtkMRMLScene()
    logic = WorkflowLogic(scene, runner=InProcessRunner())
    volume = logic.load_image_file(sample_dicom, "sample")
    seg = logic.segment(volume, device="cpu")
    logic.classify(volume, seg.segmentation_node, seg.segment_id, device="cpu")
    logic.save_results(tmp_path / "slicer")
    logic.export_dicom(tmp_path / "slicer" / "dicom")
    doors["slicer"] = _case(tmp_path / "slicer", tmp_path / "slicer" / "dicom", image)
    scene.Clear(1)

    ref = doors["cli"]
    assert ref["result"]["provenance"]["mask_origin"] == "auto" and ref["mask"].any()
    for door, case in doors.items():
        assert case["result"] == ref["result"], door
        for key in ("mask", "overlay", "seg", "sc"):
            np.testing.assert_array_equal(case[key], ref[key], err_msg=f"{door} {key}")
        np.testing.assert_allclose(case["heatmap"], ref["heatmap"], atol=1e-6, err_msg=door)
        assert case["sr"] == ref["sr"], door
    batch = tmp_path / "batch" / "s"
    batch_result = json.loads((batch / "result.json").read_text())
    for key in ("source", "seconds", "files", "batch"):
        batch_result.pop(key, None)
    assert batch_result == ref["result"]
    np.testing.assert_array_equal(load_mask(batch / "mask.nrrd", image), ref["mask"])
    from PIL import Image as PILImage

    np.testing.assert_array_equal(np.asarray(PILImage.open(batch / "overlay.png")), ref["overlay"])


def test_wrong_password_is_a_clear_401(orthanc, monkeypatch, capsys):
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    assert main(["pacs", "query", "--url", orthanc, "--user", USER]) == 2
    err = capsys.readouterr().err
    assert "401" in err and orthanc in err and "Traceback" not in err


def test_missing_series_is_404_and_writes_nothing(orthanc, password, tmp_path):
    pacs = Pacs(PacsConfig(orthanc, username=USER))
    with pytest.raises(PacsError, match="404"):
        pacs.retrieve_series("1.2.3.4", "1.2.3.4.5", tmp_path / "never")
    assert list(tmp_path.iterdir()) == []


def test_refused_connection(tmp_path):
    with pytest.raises(PacsError, match="cannot connect"):
        Pacs(PacsConfig(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5)).query_studies()


@pytest.mark.parametrize("timeout,attempts,within", [(1, 1, 30), (2, 3, 3.5)])
def test_a_silent_server_times_out_within_the_timeout_retries_included(timeout, attempts, within):
    """A server that accepts and never answers: the error comes after --timeout in all (it used to take attempts x
    timeout and more)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}/dicom-web"
        t0 = time.time()
        with pytest.raises(PacsError, match=f"no answer within {timeout} s"):
            Pacs(PacsConfig(url, timeout=timeout, attempts=attempts)).query_studies()
        assert time.time() - t0 < within
    finally:
        server.close()


@pytest.mark.parametrize("args,words", [
    (["--url", "127.0.0.1:1"], "must start with http"),
    (["--url", "http://127.0.0.1:1/dicom-web", "--timeout", "nan"], "--timeout must be"),
    (["--url", "http://127.0.0.1:1/dicom-web", "--timeout", "-5"], "--timeout must be"),
    (["--url", "https://127.0.0.1:1/dicom-web", "--ca-bundle", "/nonexistent/ca.pem"], "CA bundle not found")])
def test_bad_pacs_options_are_a_clear_exit_2(args, words, capsys):
    assert main(["pacs", "query", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and "Traceback" not in err and "internal" not in err


def _serve(handler):
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Html(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        body = b"<html><body>Welcome to the hospital intranet</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("scheme,words", [("http", "not DICOMweb JSON"), ("https", "plain HTTP, not TLS")])
def test_a_web_page_or_plain_http_behind_an_https_url_is_named(scheme, words):
    """An intranet page where the DICOMweb root should be; the same plain-HTTP server asked over https (was blamed
    on the certificate, with advice to turn verification off)."""
    server = _serve(_Html)
    try:
        with pytest.raises(PacsError, match=words):
            Pacs(PacsConfig(f"{scheme}://127.0.0.1:{server.server_address[1]}/", timeout=5)).query_studies()
    finally:
        server.shutdown()


def test_server_error_is_reported_with_its_status(capsys):
    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(503, "Service Unavailable")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        assert main(["pacs", "query", "--url", url]) == 2
        assert "503" in capsys.readouterr().err
    finally:
        server.shutdown()


def test_password_comes_from_the_environment_only(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    with pytest.raises(PacsError, match=PASSWORD_ENV):
        Pacs(PacsConfig("http://127.0.0.1:1/dicom-web", username=USER))


@pytest.mark.parametrize("uid", ["../../PWNED", "/etc/passwd", "1.2.3/../../x", "a" * 10, "1." * 40 + "1", ""])
def test_hostile_instance_uids_never_name_a_file_outside_the_folder(uid, tmp_path):
    import pydicom

    from BreastCADxLib.io.dicomweb import instance_file_name

    ds = pydicom.Dataset()
    ds.SOPInstanceUID = uid
    name = instance_file_name(ds, 3)
    assert name == "instance_00003.dcm"
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    ds.SOPInstanceUID = "1.2.840.10008.1.2.3"
    assert instance_file_name(ds, 0) == "1.2.840.10008.1.2.3.dcm"


def test_explicit_tls_options_win_over_environment_bundles(monkeypatch, tmp_path):
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(var, str(tmp_path / "env-bundle.pem"))
    (tmp_path / "mine.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    for verify in (False, str(tmp_path / "mine.pem")):
        session = Pacs(PacsConfig("https://pacs.example.org/dicom-web", verify=verify)).session
        assert session.merge_environment_settings("https://pacs.example.org/x", {}, None, None, None)["verify"] \
            == verify
    plain = Pacs(PacsConfig("https://pacs.example.org/dicom-web")).session  # no option: env applies
    assert plain.merge_environment_settings("https://pacs.example.org/x", {}, None, None, None)["verify"] \
        == str(tmp_path / "env-bundle.pem")


def test_basic_auth_over_http_is_refused_off_loopback(password):
    with pytest.raises(PacsError, match="in clear"):
        Pacs(PacsConfig("http://pacs.example.org/dicom-web", username=USER))
    Pacs(PacsConfig("http://pacs.example.org/dicom-web", username=USER, allow_http_auth=True))
    Pacs(PacsConfig("http://127.0.0.1:8042/dicom-web", username=USER))  # loopback: nothing leaves the machine


def test_the_web_page_retrieves_a_study_and_sends_its_results_back(orthanc, password, sample_dicom, scene, tmp_path):
    """The page's session (web.session) on the same Orthanc: Retrieve by study UID, Segment, Classify, Send."""
    from test_web_session import FakeViewer, run

    from BreastCADxLib.scene.logic import WorkflowLogic
    from BreastCADxLib.scene.worker import InProcessRunner
    from BreastCADxLib.web.access import DataRoots, OutputFolder
    from BreastCADxLib.web.session import ReviewSession

    pacs = Pacs(PacsConfig(orthanc, username=USER))
    src = pydicom.dcmread(sample_dicom)
    pacs.store([src])
    study = src.StudyInstanceUID
    before = {s["SeriesInstanceUID"] for s in pacs.query_series(study)}
    session = ReviewSession(WorkflowLogic(scene, runner=InProcessRunner()), FakeViewer(), DataRoots([tmp_path]),
                            OutputFolder(tmp_path / "out"), pacs=pacs, device="cpu")
    session.open_pacs(study)
    assert session.status.dicom and session.status.case == f"PACS study {study}"
    retrieved = list((tmp_path / "out").rglob("*.dcm"))
    assert len(retrieved) == 1 and pydicom.dcmread(retrieved[0]).SOPInstanceUID == src.SOPInstanceUID
    session.start_segment()
    run(session)
    session.start_classify()
    run(session)
    sent = session.send()
    new = {s["Modality"] for s in pacs.query_series(study) if s["SeriesInstanceUID"] not in before}
    assert new == {"SEG", "SR", "OT"} and len(sent) == 3
    assert all((tmp_path / "out" / name).resolve().is_relative_to((tmp_path / "out").resolve()) for name in sent)


def test_a_mammography_study_goes_through_a_set_of_its_modality(orthanc, password, mg_set, tmp_path, capsys):
    """A mammogram on the PACS: the shipped ultrasound set refuses it naming what is installed and writes nothing;
    a user's MG set without a segmenter asks for the box, then analyses the finding in it and stores its SR."""
    from PIL import Image
    from test_train import finding_box

    import dicom_factory
    from conftest import dciodvfy

    image, box = finding_box("mdb001_1")
    film = np.asarray(Image.open(image).convert("L")).astype(np.uint16) * 64
    ds = pydicom.dcmread(dicom_factory.mammogram_for_processing(tmp_path / "mg.dcm", 16383 - film))
    pacs = Pacs(PacsConfig(orthanc, username=USER))
    pacs.store([ds])
    study = ["pacs", "analyze", "--url", orthanc, "--user", USER, "--study", ds.StudyInstanceUID]

    assert main([*study, "--roi", box, "--out", str(tmp_path / "refused")]) == 2
    err = capsys.readouterr().err
    assert "mammography (MG): no model for this modality" in err and "installed sets: three-site (US)" in err
    assert not (tmp_path / "refused" / "result.json").exists()
    assert main([*study, "--model-set", str(mg_set), "--out", str(tmp_path / "nobox")]) == 2
    assert "has no segmenter" in capsys.readouterr().err
    assert main([*study, "--model-set", str(mg_set), "--roi", "1,2,3", "--url", "http://127.0.0.1:9/dicom-web",
                 "--out", str(tmp_path / "badbox")]) == 2  # refused before the (unreachable) PACS is asked
    assert "x0,y0,x1,y1" in capsys.readouterr().err

    assert main([*study, "--model-set", str(mg_set), "--roi", box, "--out", str(tmp_path / "a"), "--store"]) == 0
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert result["provenance"]["model_set"] == str(mg_set) and result["flags"][0]["code"] == "box_prompt_outline"
    series = {s["Modality"]: s["SeriesInstanceUID"] for s in pacs.query_series(ds.StudyInstanceUID)}
    assert {"MG", "SEG", "SR"} <= set(series)
    sr = read_sr_summary(next(pacs.retrieve_series(ds.StudyInstanceUID, series["SR"], tmp_path / "sr").glob("*.dcm")))
    assert sr["probability"] == pytest.approx(result["malignancy_probability"], abs=1e-12)
    for name in ("seg.dcm", "sr.dcm", "overlay.dcm"):  # SEG, SR and Secondary Capture on a mammogram
        assert not dciodvfy(tmp_path / "a" / "dicom" / name)[1], name
