"""The page at / in a real browser: Debian's headless chromium driven by Selenium.

Needs the Debian packages chromium and chromium-driver (/usr/bin/chromium,
/usr/bin/chromedriver). Set FMNIST_SCREENSHOT=docs/serve_page.png to keep the screenshot.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx2
import numpy as np
import pytest
import uvicorn
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from fmnist.images import render_photo
from fmnist.serve import create_app

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def server(small_run):
    """The app served by uvicorn in a thread on a free loopback port; yields its URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(
        uvicorn.Config(create_app(small_run), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "the browser test needs Debian's chromium and chromedriver: "
        "apt-get install chromium chromium-driver"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                "--window-size=1000,760"):  # fmt: skip
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shown(driver) -> tuple[str, list[tuple[str, float]], str]:
    """(label, [(class, bar width %)], preprocessed image src) as the page shows them."""
    bars = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#bars .bar-row"):
        style = row.find_element(By.CSS_SELECTOR, ".bar").get_attribute("style")
        bars.append((row.get_attribute("data-class"), float(re.search(r"([\d.]+)%", style)[1])))
    src = driver.find_element(By.ID, "preprocessed").get_attribute("src") or ""
    return driver.find_element(By.ID, "label").text, bars, src


def check_page_agrees_with_api(driver, api: dict) -> None:
    label, bars, src = shown(driver)
    status = driver.find_element(By.ID, "status").text
    if api["unsure"]:  # the page says unsure, and what it would have guessed
        assert label == f"Unsure (perhaps {api['label']})" and " · unsure · " in status
        label = api["label"]
    else:
        assert label == api["label"] and " · sure · " in status
    assert len(bars) == 10 and sum(w for _, w in bars) == pytest.approx(100, abs=1)
    assert max(bars, key=lambda b: b[1])[0] == label  # the longest bar is the prediction
    for (_, width), p in zip(bars, api["probabilities"], strict=True):
        assert width == pytest.approx(100 * p, abs=0.06)
    best = driver.find_element(By.CSS_SELECTOR, "#bars .bar-row.best")
    assert best.get_attribute("data-class") == label
    assert src == api["image"]  # the 28x28 image the model saw


def wait_for_status(driver, text: str) -> None:
    WebDriverWait(driver, 20).until(lambda d: text in d.find_element(By.ID, "status").text)


def test_upload_and_drawing_in_a_real_browser(server, driver, fashion, tmp_path):
    _, (x_test, y_test) = fashion
    driver.get(server)
    WebDriverWait(driver, 20).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#bars .bar-row")) == 10
    )
    classes = [b for b, _ in shown(driver)[1]]
    assert classes == httpx2.get(server + "metadata").json()["classes"]

    # An empty canvas: nothing to classify, said as such.
    driver.find_element(By.ID, "predict-drawing").click()
    wait_for_status(driver, "Nothing drawn yet: draw a garment first. · from drawing")
    assert driver.find_element(By.ID, "label").text == "Unsure: no garment found"

    # A drawing: three strokes on the canvas, then "Classify drawing".
    canvas = driver.find_element(By.ID, "canvas")
    strokes = [((-60, -90), (-70, 100)), ((60, -90), (70, 100)), ((-60, -90), (60, -90))]
    for (x0, y0), (x1, y1) in strokes:
        chain = ActionChains(driver).move_to_element_with_offset(canvas, x0, y0)
        chain.click_and_hold()
        for t in np.linspace(0, 1, 8)[1:]:  # several moves: a stroke, not a jump
            chain.move_to_element_with_offset(
                canvas, round(x0 + t * (x1 - x0)), round(y0 + t * (y1 - y0))
            )
        chain.release().perform()
    dark = driver.execute_script(
        "const c = document.getElementById('canvas');"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "let n = 0; for (let i = 0; i < d.length; i += 4) n += d[i] < 128; return n;"
    )
    assert dark > 2000  # the strokes were drawn (18-pixel-wide lines)
    driver.find_element(By.ID, "predict-drawing").click()
    wait_for_status(driver, "% · ")  # an answer with its probability, not the empty canvas
    png = base64.b64decode(
        driver.execute_script(
            "return document.getElementById('canvas').toDataURL('image/png')"
        ).split(",", 1)[1]
    )
    api = httpx2.post(server + "predict", content=png, headers={"content-type": "image/png"})
    check_page_agrees_with_api(driver, api.json())

    # A file that is not an image: the page shows the server's message.
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    driver.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(driver, 20).until(lambda d: "not an image" in d.find_element(By.ID, "error").text)

    # A photo with no garment in it: an answer, unsure, with the reason; no bars.
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((120, 160), 250, np.uint8)).save(blank)
    driver.find_element(By.ID, "file").send_keys(str(blank))
    wait_for_status(driver, "from upload: wall.png")
    assert driver.find_element(By.ID, "label").text == "Unsure: no garment found"
    assert "No garment found" in driver.find_element(By.ID, "status").text
    assert driver.find_element(By.ID, "error").text == ""
    assert {float(p) for _, p in shown(driver)[1]} == {0.0}

    # An upload: a test-set trouser rendered as a photo.
    photo = tmp_path / "trouser.jpg"
    photo.write_bytes(
        render_photo(x_test[np.flatnonzero(y_test == 1)[0]], np.random.default_rng(0))
    )
    driver.find_element(By.ID, "file").send_keys(str(photo))
    wait_for_status(driver, "from upload: trouser.jpg")
    assert driver.find_element(By.ID, "error").text == ""
    api = httpx2.post(server + "predict", files={"file": ("trouser.jpg", photo.read_bytes())})
    check_page_agrees_with_api(driver, api.json())
    assert api.json()["label"] == "Trouser"

    shot = Path(os.environ.get("FMNIST_SCREENSHOT") or tmp_path / "page.png")
    assert driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"
