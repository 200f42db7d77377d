"""The editor page in a real headless Chromium (Debian's chromium + chromedriver, driven by
selenium): build a graph, generate, see the image change when the graph changes, drag a box.

Skipped, with the reason, when selenium or the browser binaries are absent; CI installs them
(`apt-get install -y chromium chromium-driver`). A screenshot is saved to the test's temp
folder and, when $LAYOUT2IMG_ARTIFACTS is set, there too.
"""
import io
import os
import shutil
import threading
from pathlib import Path

import pytest

from layout2img.generate import load_model
from layout2img.web.server import make_server

CHROMIUM = os.environ.get("LAYOUT2IMG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("LAYOUT2IMG_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)

from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    srv = make_server(model, "127.0.0.1", 0, quiet=True, log=io.StringIO())
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(10)


@pytest.fixture
def browser(tmp_path, monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must never try to download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1400,900", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _add_object(driver, name):
    Select(driver.find_element(By.ID, "object-name")).select_by_visible_text(name)
    driver.find_element(By.ID, "add-object").click()


def _add_relation(driver, subject, predicate, obj):
    Select(driver.find_element(By.ID, "rel-subject")).select_by_visible_text(subject)
    Select(driver.find_element(By.ID, "rel-predicate")).select_by_visible_text(predicate)
    Select(driver.find_element(By.ID, "rel-object")).select_by_visible_text(obj)
    driver.find_element(By.ID, "add-relation").click()


def _image_src(driver):
    img = driver.find_element(By.ID, "result-image")
    src = img.get_attribute("src") or ""
    return src if img.is_displayed() and src.startswith("data:image/png;base64,") else None


def _wait_for_new_image(driver, old, timeout=60):
    try:
        return WebDriverWait(driver, timeout).until(
            lambda d: (s := _image_src(d)) is not None and s != old and not d.find_element(By.ID, "spinner").is_displayed()
            and s)
    except TimeoutException:
        status = driver.find_element(By.ID, "status").text
        raise AssertionError(f"no new image within {timeout}s; the page says: {status!r}") from None


def _screenshot(driver, tmp_path, name):
    path = tmp_path / name
    assert driver.save_screenshot(str(path)) and path.stat().st_size > 10_000
    artifacts = os.environ.get("LAYOUT2IMG_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def test_build_a_graph_generate_and_edit_it_in_the_page(server, browser, tmp_path):
    d = browser
    d.get(server.url)
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#object-name option"))
    assert "shapes vocabulary" in d.find_element(By.ID, "model-info").text
    # text features are shown but disabled, with the reason, on a model without a text encoder
    caption = d.find_element(By.ID, "caption")
    assert not caption.is_enabled() and "no text encoder" in caption.get_attribute("title")
    edit = d.find_element(By.ID, "edit-region")
    assert not edit.is_enabled() and "not available" in edit.get_attribute("title")

    d.find_element(By.ID, "auto-update").click()  # off: the Generate button decides when
    for name in ("sky", "grass", "circle"):
        _add_object(d, name)
    _add_relation(d, "0: sky", "above", "1: grass")
    _add_relation(d, "2: circle", "above", "1: grass")
    assert len(d.find_elements(By.CSS_SELECTOR, "#object-list li")) == 3
    relations = [li.text for li in d.find_elements(By.CSS_SELECTOR, "#relation-list li")]
    assert relations[0].startswith("sky (0) above grass (1)")
    assert _image_src(d) is None
    d.find_element(By.ID, "generate").click()
    first = _wait_for_new_image(d, None)
    status = d.find_element(By.ID, "status").text
    assert "3 object(s), 2 relation(s)" in status and "ms" in status
    assert d.find_element(By.ID, "download-png").is_enabled()

    # the graph changes: a new object, and (auto-update on) the image follows without a click
    d.find_element(By.ID, "auto-update").click()
    _add_object(d, "square")
    second = _wait_for_new_image(d, first)
    assert second != first
    assert "4 object(s)" in d.find_element(By.ID, "status").text

    # drag the square's box: it is fixed where it was dropped, and the image is redrawn
    box = d.execute_script("return state.objects[3].shown")
    canvas = d.find_element(By.ID, "layout-canvas")
    side = canvas.size["width"]
    cx, cy = ((box[0] + box[2]) / 2 - 0.5) * side, ((box[1] + box[3]) / 2 - 0.5) * side
    dx = 40 if box[2] * side + 45 < side else -40
    (ActionChains(d).move_to_element_with_offset(canvas, int(cx), int(cy)).click_and_hold()
     .move_by_offset(dx // 2, 0).move_by_offset(dx - dx // 2, 0).release().perform())
    third = _wait_for_new_image(d, second)
    fixed = d.execute_script("return state.objects[3].box")
    moved = min(max(dx / side, -box[0]), 1 - box[2])  # the page keeps boxes inside the image
    assert fixed is not None and fixed[0] == pytest.approx(box[0] + moved, abs=0.02)
    row = d.find_elements(By.CSS_SELECTOR, "#object-list li")[3]
    assert "fixed" in row.text
    assert third not in (first, second)

    # restyle one object: a new image, the layout unchanged
    row.find_element(By.CSS_SELECTOR, "button.restyle").click()
    _wait_for_new_image(d, third)
    assert d.execute_script("return state.objects[3].box") == fixed

    # the scene graph the page would download is the sg2im form, with the dragged box
    graph = d.execute_script("return buildGraph({forExport: true})")
    assert graph["objects"] == ["sky", "grass", "circle", "square"]
    assert graph["relationships"] == [[0, "above", 1], [2, "above", 1]]
    assert len(graph["boxes"]) == 4 and graph["boxes"][3] == pytest.approx(fixed, abs=1e-3)

    shot = _screenshot(d, tmp_path, "web_editor.png")
    assert shot.exists()
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


def test_a_bad_graph_shows_the_servers_reason(server, browser, tmp_path):
    d = browser
    d.get(server.url)
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#object-name option"))
    # a name the vocabulary does not know, as a loaded file could hold
    d.execute_script("loadGraph({objects: ['circel', 'sky'], relationships: [[0, 'above', 1]]}); changed({now: true});")
    WebDriverWait(d, 30).until(lambda d: "error" in (d.find_element(By.ID, "status").get_attribute("class") or ""))
    assert "unknown object 'circel'" in d.find_element(By.ID, "status").text
    rows = d.find_elements(By.CSS_SELECTOR, "#object-list li")
    assert ["invalid" in r.get_attribute("class") for r in rows] == [True, False]  # the culprit is marked
    assert _image_src(d) is None
    _screenshot(d, tmp_path, "web_editor_error.png")
