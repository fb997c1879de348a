"""Drive `breastcadx serve` from headless Debian Chromium (selenium + chromium-driver): used by the browser tests
and benchmarks/serve.py. Starts the real server as a user would, in its own process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1400, 900)
# Debian's Chromium on a closed network, as root: no sandbox, no GPU, no background connections
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}")
LESION_RGB = (237, 71, 153)  # scene.mrml.LESION_COLOR


def missing_tools() -> list[str]:
    return [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    out: Path
    log: Path
    started_s: float

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def rss_mb(self) -> float:
        """Resident memory of the server and its children (the segment/classify workers), MB."""
        total, pids = 0, [self.process.pid]
        while pids:
            pid = pids.pop()
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmRSS")))
                pids += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except (OSError, StopIteration):
                continue
        return total / 1024


def start_server(data: Path, out: Path, *extra: str, host: str = "127.0.0.1", env: dict | None = None,
                 timeout: float = 120) -> Server:
    """`breastcadx serve` in a new process; returns once it printed the address to open."""
    exe = Path(sys.executable).with_name("breastcadx")
    port = free_port()
    log = out.parent / f"serve-{port}.log"
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.Popen([str(exe), "serve", "--host", host, "--port", str(port), "--data", str(data),
                                 "--out", str(out), "--device", "cpu", *extra], stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
    while time.perf_counter() - t0 < timeout:
        text = log.read_text(errors="replace")
        url = next((ln.split("Open ", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Open http")), None)
        if url:
            with socket.socket() as s:  # printed before it listens: wait for the port
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return Server(proc, url, out, log, time.perf_counter() - t0)
        if proc.poll() is not None:
            raise RuntimeError(f"the server stopped (exit {proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the server did not start in {timeout} s:\n{log.read_text(errors='replace')[-3000:]}")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={Path(os.environ.get('TMPDIR', '/tmp')) / f'chromium-{os.getpid()}'}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


class Page:
    """The BreastCADx page in a browser, addressed by the element ids page.py gives."""

    def __init__(self, driver, url: str, timeout: float = 60) -> None:
        self.d = driver
        self.d.get(url)
        self.wait(lambda: self.enabled("open-sample"), timeout, "the page to load")

    def el(self, id_: str):
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.ID, id_)

    def has(self, id_: str) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.d.find_elements(By.ID, id_))

    def text(self, id_: str) -> str:
        return self.el(id_).text if self.has(id_) else ""

    def enabled(self, id_: str) -> bool:
        return self.has(id_) and self.el(id_).is_enabled()

    def wait(self, ok: Callable[[], bool], timeout: float, what: str) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                if ok():
                    return time.perf_counter() - t0
            except Exception:  # noqa: BLE001 - an element re-rendered between lookups: ask again
                pass
            time.sleep(0.05)
        raise AssertionError(f"waited {timeout} s for {what}; page error: {self.text('error')!r}, "
                             f"message: {self.text('message')!r}")

    def click(self, id_: str) -> None:
        self.el(id_).click()

    def run(self, button: str, done: Callable[[], bool], timeout: float = 300) -> float:
        """Click a Segment/Classify-like button; seconds until `done()` holds and no job runs."""
        t0 = time.perf_counter()
        self.click(button)
        self.wait(lambda: not self.has("progress") and (done() or self.has("error")), timeout, f"{button} to end")
        return time.perf_counter() - t0

    def choose_case(self, label: str) -> None:
        from selenium.webdriver.common.by import By

        self.type_into("case-select", label)  # the list filters as one types
        items = lambda: [i for i in self.d.find_elements(By.CSS_SELECTOR, ".v-overlay .v-list-item")  # noqa: E731
                         if i.text.strip() == label]
        self.wait(lambda: bool(items()), 10, f"'{label}' in the case list")
        items()[0].click()

    def type_into(self, id_: str, text: str) -> None:
        """Replace a text field's content as a user would (select all, type)."""
        from selenium.webdriver.common.keys import Keys

        box = self.el(id_)
        box.click()
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(Keys.BACKSPACE)
        box.send_keys(text)

    def lesion_pixels(self) -> int:
        return int(self.text("lesion").split(":")[1].split("px")[0])

    def view_rgb(self) -> tuple[np.ndarray, dict]:
        """The page as RGB pixels and the slice view's rectangle on it."""
        from PIL import Image

        png = self.d.get_screenshot_as_png()
        import io

        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int), self.el("view").rect

    def click_at(self, x: float, y: float) -> None:
        """A click at page coordinates inside the view."""
        from selenium.webdriver.common.action_chains import ActionChains

        view = self.el("view")
        r = view.rect
        ActionChains(self.d).move_to_element_with_offset(view, int(x - r["x"] - r["width"] / 2),
                                                         int(y - r["y"] - r["height"] / 2)).click().perform()

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """A mouse drag through page coordinates (the view's top-left is its rect's x, y)."""
        from selenium.webdriver.common.action_chains import ActionChains

        view = self.el("view")
        r = view.rect
        cx, cy = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
        chain = ActionChains(self.d, duration=50).move_to_element_with_offset(view, int(points[0][0] - cx),
                                                                                int(points[0][1] - cy))
        chain.move_by_offset(1, 0).pause(0.3).move_by_offset(-1, 0).pause(0.3)  # hover: a handle lights up
        chain.click_and_hold().pause(0.1)
        last = points[0]
        for p in points[1:]:
            chain.move_by_offset(int(p[0] - last[0]), int(p[1] - last[1])).pause(0.1)
            last = p
        chain.release().perform()


def image_to_page(shape: tuple[int, int], rect: dict) -> Callable[[np.ndarray, np.ndarray], tuple]:
    """Pixel (row, col) of the image -> page (x, y): the view shows the whole image, centred and fitted
    (Slicer's reset-to-fit)."""
    h, w = shape
    s = min(rect["width"] / w, rect["height"] / h)
    ox, oy = rect["x"] + (rect["width"] - s * w) / 2, rect["y"] + (rect["height"] - s * h) / 2
    return lambda rows, cols: (ox + s * (np.asarray(cols) + 0.5), oy + s * (np.asarray(rows) + 0.5))


def lesion_coloured(rgb: np.ndarray) -> np.ndarray:
    """Pixels tinted by the lesion segment's magenta (fill or contour); grey ultrasound has none."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return (r - g > 40) & (b - g > 20)


def have_dciodvfy() -> bool:
    return shutil.which("dciodvfy") is not None
