"""web.access: the server reads only the served folders, writes only new folders in its output folder, and needs
a token beyond loopback."""

from __future__ import annotations

import os

import pytest

from BreastCADxLib.web.access import TOKEN_ENV, AccessError, DataRoots, OutputFolder, access_token, is_loopback
from conftest import MODULE_DIR

DATA = MODULE_DIR / "Testing" / "Data"


@pytest.fixture()
def served(tmp_path):
    root = tmp_path / "served"
    (root / "series").mkdir(parents=True)
    (root / "a.png").write_bytes(b"x")
    (root / "a_mask.png").write_bytes(b"x")
    (root / "notes.txt").write_text("not an image")
    for k in range(3):
        (root / "series" / f"{k}.dcm").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"private")
    os.symlink(tmp_path / "secret.png", root / "link.png")
    return DataRoots([root]), tmp_path


def test_listing_offers_images_and_series_not_masks_or_other_files(served):
    roots, _ = served
    refs = {e.ref for e in roots.listing()}
    assert {"0/a.png", "0/series", "0/series/0.dcm"} <= refs
    assert not {"0/a_mask.png", "0/notes.txt"} & refs


@pytest.mark.parametrize("ref", ["0/../secret.png", "0/series/../../secret.png", "0//etc/passwd", "0/link.png",
                                 "1/a.png", "../secret.png", "x/a.png", "0/", "0/missing.png"])
def test_paths_outside_the_served_folders_are_refused(served, ref):
    roots, _ = served
    with pytest.raises(AccessError) as e:
        roots.resolve(ref)
    assert "private" not in str(e.value) and "Traceback" not in str(e.value)


def test_a_served_case_resolves_and_is_labelled_without_the_server_layout(served):
    roots, tmp = served
    path = roots.resolve("0/series/../a.png")
    assert path == (tmp / "served" / "a.png").resolve()
    assert roots.label(path) == "served/a.png"


def test_data_must_be_an_existing_folder(tmp_path):
    with pytest.raises(AccessError, match="existing folder"):
        DataRoots([tmp_path / "nope"])


def test_output_folders_are_new_and_never_reused(tmp_path):
    out = OutputFolder(tmp_path / "out")
    a, b = out.new_folder("../../etc/x", "result"), out.new_folder("../../etc/x", "result")
    assert a != b and a.parent == b.parent == out.root and a.is_dir() and not any(a.iterdir())
    with pytest.raises(AccessError, match="outside the output folder"):
        out.inside(tmp_path / "elsewhere.txt")


def test_loopback_needs_no_token_anything_else_does():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    assert access_token("127.0.0.1", {}) is None
    with pytest.raises(AccessError, match=TOKEN_ENV):
        access_token("0.0.0.0", {})
    with pytest.raises(AccessError, match="too short"):
        access_token("0.0.0.0", {TOKEN_ENV: "short"})
    assert access_token("0.0.0.0", {TOKEN_ENV: "a-long-enough-secret"}) == "a-long-enough-secret"
    assert access_token("127.0.0.1", {TOKEN_ENV: "a-long-enough-secret"}) == "a-long-enough-secret"
