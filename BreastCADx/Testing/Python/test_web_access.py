"""web.access: the server reads only the served folders, writes only new folders in its output folder, and needs
a token beyond loopback."""

from __future__ import annotations

import os
import socket
import time

import pytest

from BreastCADxLib.web.access import (
    TOKEN_ENV,
    AccessError,
    DataRoots,
    OutputFolder,
    access_token,
    is_loopback,
    refusal,
)
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
    refs = {e.ref for e in roots.scan().cases}
    assert {"0/a.png", "0/series", "0/series/0.dcm"} <= refs
    assert not {"0/a_mask.png", "0/notes.txt"} & refs


def test_one_walk_finds_cases_profiles_and_sets_and_stops_at_its_bound(served, monkeypatch):
    from BreastCADxLib.web import access

    roots, _ = served
    root = roots.roots[0]
    (root / "sites" / "h1").mkdir(parents=True)
    (root / "sites" / "h1" / "site.json").write_text("{}")
    (root / "sets" / "mg").mkdir(parents=True)
    (root / "sets" / "mg" / "modelset.json").write_text("{}")
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(access.os, "walk", lambda *a, **k: walks.append(a) or real_walk(*a, **k))
    found = roots.scan()
    assert len(walks) == 1
    assert [e.ref for e in found.site_profiles] == ["0/sites/h1"] and [e.ref for e in found.model_sets] == ["0/sets/mg"]
    assert {"0/a.png", "0/series"} <= {e.ref for e in found.cases}
    for k in range(50):
        (root / f"deep{k:02d}").mkdir()
        (root / f"deep{k:02d}" / "x.png").write_bytes(b"x")
    monkeypatch.setattr(access, "MAX_VISITED", 20)
    assert len(roots.scan().cases) < 25  # a huge folder is not walked to its end


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


def test_a_path_is_named_by_the_listings_own_reference_and_nothing_outside_gets_one(served):
    roots, tmp = served
    root = roots.roots[0]
    (root / "sets" / "mg").mkdir(parents=True)
    for folder in (root, root / "sets" / "mg"):  # the served folder itself can be a set
        (folder / "modelset.json").write_text("{}")
    listed = [e.ref for e in roots.scan().model_sets]
    assert listed == ["0/.", "0/sets/mg"]
    assert [roots.ref(roots.resolve(r)) for r in listed] == listed
    assert roots.ref(tmp / "secret.png") is None and roots.ref(root / "link.png") is None  # the link leads outside


def test_data_must_be_an_existing_folder(tmp_path):
    with pytest.raises(AccessError, match="existing folder"):
        DataRoots([tmp_path / "nope"])


def test_output_folders_are_new_and_never_reused(tmp_path):
    out = OutputFolder(tmp_path / "out")
    a, b = out.new_folder("../../etc/x", "result"), out.new_folder("../../etc/x", "result")
    assert a != b and a.parent == b.parent == out.root and a.is_dir() and not any(a.iterdir())
    with pytest.raises(AccessError, match="outside the output folder"):
        out.inside(tmp_path / "elsewhere.txt")


def test_a_token_always_a_new_one_per_start_on_loopback_a_given_one_beyond():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    a, b = access_token("127.0.0.1", {}), access_token("127.0.0.1", {})
    assert a != b and len(a) >= 24
    with pytest.raises(AccessError, match=TOKEN_ENV):
        access_token("0.0.0.0", {})
    with pytest.raises(AccessError, match="too short"):
        access_token("0.0.0.0", {TOKEN_ENV: "short"})
    assert access_token("0.0.0.0", {TOKEN_ENV: "a-long-enough-secret"}) == "a-long-enough-secret"
    assert access_token("127.0.0.1", {TOKEN_ENV: "a-long-enough-secret"}) == "a-long-enough-secret"


@pytest.mark.parametrize("host_header,origin,refused", [
    ("127.0.0.1:8080", None, False), ("localhost:8080", "http://localhost:8080", False),
    ("127.0.0.1:8080", "http://127.0.0.1:8080", False),
    ("127.0.0.1:8080", "http://evil.example.com", True),  # another website's page opening our WebSocket
    ("evil.example.com:8080", "http://evil.example.com:8080", True),  # DNS rebinding: same origin, foreign Host
    ("127.0.0.1:9999", None, True), (None, None, True)])
def test_host_and_origin_must_be_the_served_address_on_loopback(host_header, origin, refused):
    assert (refusal("127.0.0.1", 8080, host_header, origin) is not None) == refused


def test_beyond_loopback_the_origin_is_still_checked_the_token_guards_the_rest():
    assert refusal("0.0.0.0", 8080, "ward-pc.hospital:8080", "http://ward-pc.hospital:8080") is None
    assert refusal("0.0.0.0", 8080, "ward-pc.hospital:8080", "http://evil.example.com") is not None


def test_a_non_ascii_digit_is_not_a_folder_index(served):
    roots, _ = served
    with pytest.raises(AccessError, match="not a case"):
        roots.resolve("\u00b2/b2.png")  # '\u00b2'.isdigit() is True, int() of it fails


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(request)
        return s.recv(4096)


def test_a_running_server_refuses_foreign_origins_and_long_requests_in_one_line(tmp_path):
    """`breastcadx serve` on loopback: a WebSocket upgrade from another website's page, or under another Host
    name, is 403; the page's own is upgraded; a 70 kB URL is a 4xx with one log line, no traceback; the printed
    address is the bound one and carries the token, here one starting with "-" (1 in 64 random ones do)."""
    from web_driver import start_server

    token = "-a-secret-that-starts-with-a-dash"
    srv = start_server(DATA, tmp_path / "out", env={TOKEN_ENV: token})
    port = int(srv.url.split(":")[2].split("/")[0])
    try:
        assert srv.url == f"http://127.0.0.1:{port}/?secret={token}"
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        upgrade = ("GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: " + key + "\r\nSec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n")
        own = f"127.0.0.1:{port}"
        evil = _raw(port, upgrade.format(host=own, origin="http://evil.example.com").encode())
        rebound = _raw(port, upgrade.format(host=f"evil.example.com:{port}",
                                            origin=f"http://evil.example.com:{port}").encode())
        mine = _raw(port, upgrade.format(host=own, origin=f"http://{own}").encode())
        assert evil.startswith(b"HTTP/1.1 403") and rebound.startswith(b"HTTP/1.1 403"), (evil, rebound)
        assert mine.startswith(b"HTTP/1.1 101"), mine
        long_url = _raw(port, f"GET /{'a' * 70000} HTTP/1.1\r\nHost: {own}\r\n\r\n".encode())
        assert long_url.split(b" ")[1].startswith(b"4"), long_url[:100]
        time.sleep(0.5)
        assert "Traceback" not in srv.log.read_text(errors="replace")
    finally:
        srv.stop()
