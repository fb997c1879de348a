"""End to end in headless Debian Chromium: `breastcadx serve` started as a user would, the page driven by real
mouse events (selenium + chromium-driver).

Set BREASTCADX_SCREENSHOTS=docs/screenshots to (re)write the README's pictures from these runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from web_driver import Page, browser, image_to_page, lesion_coloured, missing_tools, start_server

from conftest import MODULE_DIR, SAMPLE_DIR, dciodvfy

DATA = MODULE_DIR / "Testing" / "Data"
SAMPLE = SAMPLE_DIR / "BreastCADx_US_sample.dcm"
BENIGN = "Data/busi/benign_031.png"

if missing_tools():
    pytest.fail(f"the browser tests need Debian's chromium and chromium-driver ({', '.join(missing_tools())} "
                "missing): run bash scripts/run_tests.sh as root, or apt-get install chromium chromium-driver",
                pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    srv = start_server(DATA, root / "out")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def driver():
    d = browser()
    yield d
    d.quit()


@pytest.fixture()
def shots(tmp_path) -> Path:
    folder = Path(os.environ.get("BREASTCADX_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def golden_sample_mask() -> np.ndarray:
    from BreastCADxLib.io import load_image, load_mask

    return load_mask(SAMPLE_DIR / "BreastCADx_US_sample_mask.nrrd", load_image(SAMPLE))[0].astype(bool)


def segment(page: Page) -> None:
    page.run("segment", lambda: "(auto)" in page.text("lesion"))
    assert not page.has("error"), page.text("error")


def classify(page: Page) -> None:
    page.run("classify", lambda: page.has("probability") and not page.has("out-of-date"))
    assert not page.has("error"), page.text("error")


def test_sample_load_segment_correct_classify_export(server, driver, shots, tmp_path):
    page = Page(driver, server.url)
    page.click("open-sample")
    page.wait(lambda: "BreastCADx US sample" in page.text("case"), 30, "the sample to open")
    page.wait(lambda: page.enabled("segment"), 10, "Segment to be enabled")
    golden = golden_sample_mask()
    before, rect = page.view_rgb()
    assert not lesion_coloured(before).any()

    segment(page)
    page.wait(lambda: lesion_coloured(page.view_rgb()[0]).sum() > 1000, 10, "the lesion contour in the view")
    rgb, rect = page.view_rgb()
    to_page = image_to_page(golden.shape, rect)
    ys, xs = np.nonzero(lesion_coloured(rgb))
    rows, cols = np.nonzero(golden)
    gx, gy = to_page(rows, cols)
    inside = (xs >= gx.min() - 10) & (xs <= gx.max() + 10) & (ys >= gy.min() - 10) & (ys <= gy.max() + 10)
    assert inside.mean() > 0.97  # the colour is where the lesion is ...
    cx, cy = to_page(rows.mean(), cols.mean())
    assert lesion_coloured(rgb)[int(cy) - 5:int(cy) + 5, int(cx) - 5:int(cx) + 5].all()  # ... and fills its centre

    classify(page)
    first = page.text("probability")
    driver.save_screenshot(str(shots / "malignant_before_correction.png"))

    page.click("tool-paint")
    before_px = page.lesion_pixels()
    right = cols.max()
    row = int(rows.mean())
    x0, y0 = to_page(row, right - 30)
    x1, y1 = to_page(row + 40, right + 60)
    page.stroke([(float(x0), float(y0)), (float((x0 + x1) / 2), float((y0 + y1) / 2)), (float(x1), float(y1))])
    page.wait(lambda: page.lesion_pixels() > before_px, 15, "the server-side mask to grow after the stroke")
    page.wait(lambda: page.has("out-of-date"), 10, "the result to be flagged out of date")
    assert "(edited)" in page.text("lesion")
    page.click("undo")
    page.wait(lambda: page.lesion_pixels() == before_px, 15, "undo to restore the mask")
    page.click("redo")
    page.wait(lambda: page.lesion_pixels() > before_px, 15, "redo to repeat the stroke")
    page.click("tool-none")

    classify(page)
    driver.save_screenshot(str(shots / "malignant_after_correction.png"))
    shown_p, shown_birads = page.text("probability"), page.text("birads")
    assert shown_p != "" and first != ""

    page.click("save")
    page.wait(lambda: "result.json" in page.text("outputs"), 60, "Save")
    saved = next(server.out.glob("*-result-*/result.json"))
    ours = json.loads(saved.read_text())
    assert ours["provenance"]["mask_origin"] == "edited"
    cli = subprocess.run([str(Path(sys.executable).with_name("breastcadx")), "analyze", str(SAMPLE), "--mask",
                          str(saved.with_name("mask.nrrd")), "--out", str(tmp_path / "cli"), "--device", "cpu"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    theirs = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert shown_p == f"{100 * theirs['malignancy_probability']:.1f} %"
    assert shown_birads == theirs["birads_suggestion"]
    assert abs(ours["malignancy_probability"] - theirs["malignancy_probability"]) < 1e-5

    page.click("export")
    page.wait(lambda: ".dcm" in page.text("outputs"), 60, "Export")
    files = sorted(server.out.glob("*-dicom-*/*.dcm"))
    seg = [f for f in files if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SEG"]
    assert len(files) >= 3 and len(seg) == 1
    report, errors = dciodvfy(seg[0])
    assert errors == [], report
    assert all(p.resolve().is_relative_to(server.out.resolve()) for p in server.out.rglob("*"))


def test_roi_box_drawn_and_dragged_then_segmented_inside_it(server, driver):
    page = Page(driver, server.url)
    page.click("open-sample")
    page.wait(lambda: page.enabled("roi-draw"), 30, "the sample to open")
    golden = golden_sample_mask()
    rows, cols = np.nonzero(golden)
    page.click("roi-draw")
    rect = page.el("view").rect
    to_page = image_to_page(golden.shape, rect)
    (xa, xb), (ya, yb) = to_page([rows.min() + 40, rows.max() + 10], [cols.min() - 10, cols.max() + 10])
    page.click_at(float(xa), float(ya))
    page.click_at(float(xb), float(yb))
    roi = lambda: [int(v) for v in page.el("roi-text").get_attribute("value").split()]  # noqa: E731
    page.wait(lambda: len(roi()) == 4, 15, "the drawn box on the page")
    drawn = roi()
    assert abs(drawn[1] - (rows.min() + 40)) <= 2 and abs(drawn[2] - (cols.max() + 11)) <= 2
    # adjust: raise the top edge to take in the top of the lesion (typed; dragging the handles does not reach
    # Slicer's ROI widget through trame-slicer 2.0.0's remote view)
    page.type_into("roi-text", f"{drawn[0]} {rows.min() - 10} {drawn[2]} {drawn[3]}")
    page.click("roi-set")
    page.wait(lambda: roi()[1] == rows.min() - 10, 15,
              f"the adjusted box on the page (shows {page.el('roi-text').get_attribute('value')})")
    segment(page)
    inside = golden[roi()[1]:roi()[3], roi()[0]:roi()[2]].sum()
    assert 0.7 * inside < page.lesion_pixels() < 1.3 * golden.sum()


def test_benign_case_from_the_served_folder(server, driver, shots):
    page = Page(driver, server.url)
    page.choose_case(BENIGN)
    page.click("open-case")
    page.wait(lambda: BENIGN in page.text("case"), 30, "the case to open")
    segment(page)
    classify(page)
    driver.save_screenshot(str(shots / "benign_before_correction.png"))
    before_px = page.lesion_pixels()
    page.click("tool-erase")
    from BreastCADxLib.io import load_image, load_mask

    image = DATA / "busi" / "benign_031.png"
    rows, cols = np.nonzero(load_mask(image.with_name("benign_031_mask.png"), load_image(image))[0])
    to_page = image_to_page((load_image(image).array.shape[1:]), page.el("view").rect)
    row = int(rows.mean())
    (x0, x1), (y, _) = to_page([row, row], [cols.min() - 5, np.percentile(cols, 12)])  # trim the left edge
    page.stroke([(float(x0), float(y)), (float(x0 + x1) / 2, float(y)), (float(x1), float(y))])
    page.wait(lambda: page.lesion_pixels() < before_px, 15, "the erase stroke to shrink the mask")
    page.wait(lambda: page.has("out-of-date"), 10, "the out-of-date flag")
    page.click("tool-none")
    classify(page)
    driver.save_screenshot(str(shots / "benign_after_correction.png"))
    assert page.enabled("save") and not page.enabled("export")  # a PNG has no DICOM for SEG/SR/SC to reference


def test_cancel_stops_segment_and_changes_nothing(server, driver):
    page = Page(driver, server.url)
    page.click("open-sample")
    page.wait(lambda: page.enabled("segment"), 30, "the sample to open")
    page.click("segment")
    page.wait(lambda: page.enabled("cancel"), 10, "Cancel to be offered while Segment runs")
    page.click("cancel")
    page.wait(lambda: "Cancelled" in page.text("message"), 10, "the cancellation")
    assert "0 px (none)" in page.text("lesion") and page.enabled("segment") and not page.has("progress")


def test_a_bad_file_is_a_message_on_the_page(server, driver):
    page = Page(driver, server.url)
    page.choose_case("Data/bad/corrupt.tif")
    page.click("open-case")
    page.wait(lambda: page.has("error"), 30, "the error message")
    message = page.text("error")
    assert message.startswith("Open case: Data/bad/corrupt.tif:") and "not a readable image" in message
    assert "Traceback" not in message and str(DATA) not in message
    assert not page.enabled("segment")
    # a client that forges the case reference (not offered by the list) is refused by the server
    driver.execute_script("window.trame.state.set('case_ref', '0/../../../../../../etc/passwd')")
    page.click("open-case")
    page.wait(lambda: "outside the served folders" in page.text("error"), 30, "the traversal to be refused")
    assert "root:" not in driver.page_source


def test_beyond_loopback_needs_a_token(tmp_path, driver):
    with pytest.raises(RuntimeError, match="BREASTCADX_SERVE_TOKEN"):
        start_server(DATA, tmp_path / "out", host="0.0.0.0", env={"BREASTCADX_SERVE_TOKEN": ""}, timeout=60)
    token = "test-token-0123456789"
    srv = start_server(DATA, tmp_path / "out2", host="0.0.0.0", env={"BREASTCADX_SERVE_TOKEN": token})
    try:
        assert srv.url.endswith(f"?secret={token}")
        with pytest.raises(AssertionError, match="the page to load"):  # without the token: no session
            Page(driver, srv.url.split("?")[0].replace("0.0.0.0", "127.0.0.1"), timeout=10)
        Page(driver, srv.url.replace("0.0.0.0", "127.0.0.1"))  # with it
    finally:
        srv.stop()


def test_a_film_through_a_users_set_without_a_segmenter(mg_set, driver, tmp_path):
    """`serve --model-set` with a mammography set made by `breastcadx train` (no segmenter): the page says the box
    is needed, the typed box is the finding's outline, and the result carries the box-outline flag."""
    film = "Data/minimias/films/mdb001_256.png"
    srv = start_server(DATA, tmp_path / "out", "--model-set", str(mg_set))
    try:
        page = Page(driver, srv.url)
        assert str(mg_set) in page.text("model-set")
        page.choose_case(film)
        page.click("open-case")
        page.wait(lambda: film in page.text("case"), 30, "the film to open")
        assert "needed: this model set has no segmenter" in page.text("message")
        page.type_into("roi-text", "85 100 183 199")
        page.click("roi-set")
        page.wait(lambda: "ROI box set" in page.text("message"), 15, "the typed box")
        page.run("segment", lambda: "(user)" in page.text("lesion"))
        assert not page.has("error") and page.text("message").startswith("Box outline")
        classify(page)
        assert "box outline: this model set has no segmenter" in page.text("flags")
    finally:
        srv.stop()
