"""The page of `deepfake-detect serve` in a real browser: Debian's chromium, headless, driven by selenium through
chromium-driver, against the app served by uvicorn on a free port. It uploads the README's astronaut and a
generated face, waits for the answers, checks each face's box, both scores and the verdict on the page against the
API's JSON for the same files, toggles Grad-CAM and saves a screenshot (to tmp, or where DFD_SCREENSHOT says:
`DFD_SCREENSHOT=docs/serve.png pytest tests/test_serve_browser.py` remakes the README's)."""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from deepfake_detect.detector import load_shipped
from deepfake_detect.serve import create_app

from conftest import REPO

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1400", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(not (CHROMIUM.is_file() and DRIVER.is_file()),
                                reason="needs Debian's chromium and chromium-driver (/usr/bin/chromium, /usr/bin/"
                                       "chromedriver): apt-get install chromium chromium-driver (.ci/run does)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """The app on a free localhost port, in a thread: its base URL."""
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(load_shipped("cpu")), host="127.0.0.1", port=port,
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _api(server: str, path: Path) -> dict:
    r = httpx.post(f"{server}/api/v1/predict", files=[("files", (path.name, path.read_bytes()))], timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture(scope="module")
def pictures(tmp_path_factory, demo_faces, server) -> list[Path]:
    """The README's astronaut, and a generated face: a demo fake in which the face detector finds a face."""
    import skimage.data

    root = tmp_path_factory.mktemp("upload")
    astronaut = root / "astronaut.png"
    Image.fromarray(skimage.data.astronaut()).save(astronaut)
    for fake in (p for p in demo_faces if p.parent.name == "fake"):
        # at 384 px: the 128 px demo face would be too small to judge for the 224 px detectors
        Image.open(fake).resize((384, 384), Image.BICUBIC).save(root / "generated_face.png")
        if any(r["status"] == "ok" for r in _api(server, root / "generated_face.png")["rows"]):
            return [astronaut, root / "generated_face.png"]
    pytest.fail("MTCNN found a face in none of the demo fakes")


def _wait(driver, condition, what: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(condition)
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; status: "
                         + driver.execute_script("return document.getElementById('status').textContent"))


def test_the_page_in_chromium(server, browser, pictures, tmp_path):
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(server + "/")
    _wait(driver, "return document.querySelectorAll('#cards .card').length == 2", "the detectors' cards")
    assert driver.find_element(By.CSS_SELECTOR, '#cards a[href="/cards/faceswap"]')
    driver.find_element(By.ID, "pick").send_keys("\n".join(str(p) for p in pictures))
    _wait(driver, "return document.querySelectorAll('article.result[data-state=done]').length == 2", "the answers")

    for path in pictures:
        api = _api(server, path)
        faces = [r for r in api["rows"] if r["status"] == "ok"]
        assert faces, path.name
        card = driver.find_element(By.CSS_SELECTOR, f'article.result[data-name="{path.name}"]')
        img = card.find_element(By.CSS_SELECTOR, ".pic img")
        w, h = api["files"][0]["size"]
        scale = img.size["width"] / w
        for r in faces:
            # the box: where the API says, drawn over the picture at the picture's scale
            box = card.find_element(By.CSS_SELECTOR, f'.box[data-face="{r["face"]}"]')
            assert box.get_attribute("data-box") == " ".join(map(str, r["box"]))
            assert box.get_attribute("data-verdict") == r["verdict"]
            x0, y0, x1, y1 = r["box"]
            assert box.location["x"] - img.location["x"] == pytest.approx(x0 * scale, abs=2)
            assert box.location["y"] - img.location["y"] == pytest.approx(y0 * scale, abs=2)
            assert box.size["width"] == pytest.approx((x1 - x0) * scale, abs=2)
            assert box.size["height"] == pytest.approx((y1 - y0) * scale, abs=2)
            assert ("fake" in box.get_attribute("class").split()) == (r["verdict"] == "fake")
            # both scores and the verdict in the face's row
            row = card.find_element(By.CSS_SELECTOR, f'tr.face[data-face="{r["face"]}"]')
            for name in api["detectors"]:
                cell = row.find_element(By.CSS_SELECTOR, f'td.p[data-detector="{name}"]')
                assert cell.find_element(By.CSS_SELECTOR, ".pv").text == f"{r[f'p_fake_{name}']:.3f}"
                assert ("over" in cell.get_attribute("class").split()) == (name in r["fired"].split(";"))
            assert row.get_attribute("data-verdict") == r["verdict"]
            assert row.find_element(By.CSS_SELECTOR, ".verdict").text == r["verdict"]
            # the cards' "not for" beside the verdict
            assert row.find_element(By.CSS_SELECTOR, "details.notfor summary").text.startswith("not for")

    # Grad-CAM: asked for when toggled, one figure per face (of the detector that fired, or the closest one)
    driver.find_element(By.ID, "gradcam").click()
    n_faces = sum(len([r for r in _api(server, p)["rows"] if r["status"] == "ok"]) for p in pictures)
    _wait(driver, f"return document.querySelectorAll('article.result[data-state=done]').length == 2 && "
                  f"document.querySelectorAll('.cams figure img').length >= {n_faces}", "the Grad-CAM figures")
    _wait(driver, "return [...document.querySelectorAll('.cams img')].every(i => i.complete && i.naturalWidth > 50)",
          "the Grad-CAM images to decode")
    assert driver.find_element(By.ID, "dl-csv").is_enabled() and driver.find_element(By.ID, "dl-json").is_enabled()
    shot = Path(os.environ.get("DFD_SCREENSHOT", tmp_path / "serve.png"))
    if not shot.is_absolute():
        shot = REPO / shot
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(shot))
    with Image.open(shot) as im:
        assert im.size[0] >= 800
        small = im.convert("RGB").quantize(256)  # a palette PNG: a third of the bytes, for the README
    small.save(shot, optimize=True)
