"""The editor page in a real headless Chromium (Debian's chromium + chromedriver, driven by
selenium) against the FastAPI app served by uvicorn on 127.0.0.1: build a graph, generate, see the
image change when the graph changes, drag a box; edit a region with text (progress, cancel,
result, undo); open a picture and apply its appearance to the scene and to one object (and undo).

Skipped, with the reason, when selenium or the browser binaries are absent; CI installs them
(`apt-get install -y chromium chromium-driver`). A screenshot is saved to the test's temp
folder and, when $LAYOUT2IMG_ARTIFACTS is set, there too.
"""
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_CLIP, serve_in_thread

from layout2img.generate import load_model
from layout2img.models.text import TextEncoder
from layout2img.web.server import build_app

CHROMIUM = os.environ.get("LAYOUT2IMG_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("LAYOUT2IMG_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[test]')")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                "(apt-get install -y chromium chromium-driver)", allow_module_level=True)

from selenium.common.exceptions import StaleElementReferenceException, TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    yield from serve_in_thread(build_app(model, quiet=True))


@pytest.fixture(scope="module")
def edit_server(tiny_checkpoint):
    """A text-free model with a tiny CLIP for edits; fast edits that change its image (see test_web)."""
    torch.manual_seed(0)
    clip = TextEncoder.from_config(TINY_CLIP).freeze()
    model = load_model(tiny_checkpoint, "cpu")
    options = {"steps": 2, "restarts": 1, "lr": 0.5, "strength": 10.0, "preserve_weight": 0.0}
    yield from serve_in_thread(build_app(model, quiet=True, clip=clip, clip_spec="tiny-clip", edit_options=options))


@pytest.fixture(scope="module")
def styled_server(tiny_styled_checkpoint):
    """The tiny model with fitted style clusters."""
    model = load_model(tiny_styled_checkpoint, "cpu")
    yield from serve_in_thread(build_app(model, quiet=True))


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
    assert not edit.is_enabled() and "--clip" in edit.get_attribute("title")

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


def _status(driver):
    return driver.find_element(By.ID, "status").text


def _wait_for_status(driver, words, timeout=60):
    try:
        WebDriverWait(driver, timeout).until(lambda d: words in _status(d))
    except TimeoutException:
        raise AssertionError(f"the page never said {words!r} within {timeout}s; it says: {_status(driver)!r}") from None


def test_edit_a_region_with_text_cancel_and_undo(edit_server, browser, tmp_path):
    d = browser
    d.set_window_size(1400, 1100)  # the whole editing form in the screenshots
    d.get(edit_server.url)
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#object-name option"))
    toggle = d.find_element(By.ID, "edit-region")
    assert toggle.is_enabled() and not d.find_element(By.ID, "edit-form").is_displayed()
    d.find_element(By.ID, "auto-update").click()  # off: the Generate button decides when
    for name in ("sky", "grass", "circle"):
        _add_object(d, name)
    _add_relation(d, "2: circle", "above", "1: grass")
    d.find_element(By.ID, "generate").click()
    first = _wait_for_new_image(d, None)

    # open the editor, pick the circle, describe it, and run the edit
    toggle.click()
    assert d.find_element(By.ID, "edit-form").is_displayed() and toggle.get_attribute("aria-expanded") == "true"
    run = d.find_element(By.ID, "edit-run")
    assert not run.is_enabled()  # no text yet
    Select(d.find_element(By.ID, "edit-target")).select_by_visible_text("2: circle")
    d.find_element(By.ID, "edit-text").send_keys("a green circle")
    d.find_element(By.ID, "edit-negatives").send_keys("a red circle, a blue circle")
    assert run.is_enabled() and not d.find_element(By.ID, "edit-undo").is_enabled()
    run.click()
    _wait_for_status(d, "Edited 2: circle to \u201ca green circle\u201d")
    edited = _image_src(d)
    assert edited not in (None, first) and "CLIP" in _status(d)
    codes = d.execute_script("return state.objects.map((o) => o.code)")
    assert [len(c) for c in codes] == [8, 8, 8]  # the edit's codes: later images keep its look
    assert not d.find_element(By.ID, "edit-progress").is_displayed()

    # draw a box on the image: it becomes the region, and a second edit changes the image again
    overlay = d.find_element(By.ID, "edit-overlay")
    side = overlay.size["width"]
    (ActionChains(d).move_to_element_with_offset(overlay, -side // 4, -side // 4).click_and_hold()
     .move_by_offset(side // 8, side // 8).move_by_offset(side // 8, side // 8).release().perform())
    assert Select(d.find_element(By.ID, "edit-target")).first_selected_option.text == "the box drawn on the image"
    box = d.execute_script("return editing.box")
    assert box == pytest.approx([0.25, 0.25, 0.5, 0.5], abs=0.02)
    run.click()
    _wait_for_status(d, "Edited the drawn box")
    boxed = _image_src(d)
    assert boxed not in (None, first, edited)
    _screenshot(d, tmp_path, "web_editor_edit.png")

    # a click on the image picks the object under it (the smallest box there: the one drawn on top)
    boxes = d.execute_script("return state.objects.map((o) => o.shown)")
    x, y = (boxes[2][0] + boxes[2][2]) / 2, (boxes[2][1] + boxes[2][3]) / 2
    under = [i for i, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]]
    top = min(under, key=lambda i: (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]))
    ActionChains(d).move_to_element_with_offset(overlay, int((x - 0.5) * side), int((y - 0.5) * side)).click().perform()
    picked = Select(d.find_element(By.ID, "edit-target")).first_selected_option.text
    assert picked == f"{top}: {['sky', 'grass', 'circle'][top]}"
    Select(d.find_element(By.ID, "edit-target")).select_by_visible_text("2: circle")

    # a long edit shows its progress and stops on Cancel, the image untouched
    jobs = edit_server.app.state.jobs
    jobs.defaults = {**jobs.defaults, "steps": 200, "restarts": 2}
    try:
        run.click()
        progress = d.find_element(By.ID, "edit-progress-text")
        WebDriverWait(d, 60).until(lambda d: re.search(r"restart 1/2 \u00b7 step \d+/200 \u00b7 CLIP -?\d\.\d{3}",
                                                       progress.text))
        assert d.find_element(By.ID, "edit-progress").is_displayed() and not run.is_enabled()
        _screenshot(d, tmp_path, "web_editor_edit_progress.png")
        d.find_element(By.ID, "edit-cancel").click()
        _wait_for_status(d, "Edit cancelled")
    finally:
        jobs.defaults = {**jobs.defaults, "steps": 2, "restarts": 1}
    assert _image_src(d) == boxed and not d.find_element(By.ID, "edit-cancel").is_displayed()

    # Undo twice: the image before each edit, exactly, and the styles before them
    undo = d.find_element(By.ID, "edit-undo")
    undo.click()
    assert _image_src(d) == edited
    undo.click()
    assert _image_src(d) == first and not undo.is_enabled()
    assert d.execute_script("return state.objects.map((o) => o.code)") == [None, None, None]
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


def test_restyle_steps_through_the_class_clusters_shown_as_swatches(styled_server, browser, tmp_path):
    d = browser
    d.get(styled_server.url)
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#object-name option"))
    _add_object(d, "circle")
    _wait_for_new_image(d, None)
    answer = styled_server.app.state.service.swatches.for_class("circle")
    k = len(answer["clusters"])
    assert k >= 2 and d.execute_script("return state.info.style_clusters.circle") == k

    def chips():  # each swatch of the circle's row: [background colour, whether it is the current style]
        return d.execute_script("return [...document.querySelectorAll('#object-list li button.style-chip')]"
                                ".map((c) => [getComputedStyle(c).backgroundColor, c.classList.contains('current')])")

    def shown():  # the cluster the circle is drawn with (null: random) and its code
        return d.execute_script("const o = state.objects[0]; return [currentCluster(o), o.code];")

    def click(selector, index=0):  # the list is redrawn when an image arrives: find the button again then
        for _ in range(20):
            try:
                return d.find_elements(By.CSS_SELECTOR, selector)[index].click()
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{selector} kept being redrawn")

    # the swatches: one per cluster in its colour, then "random" (the current one: a new object's draw)
    colours = ["rgb(%d, %d, %d)" % tuple(int(c["color"][i:i + 2], 16) for i in (1, 3, 5)) for c in answer["clusters"]]
    WebDriverWait(d, 30).until(lambda d: [c for c, _ in chips()[:k]] == colours)
    assert [on for _, on in chips()] == [False] * k + [True]
    # restyle steps through the clusters, drawing each with its centre, then back to a random draw
    for j in [*range(k), None]:
        click("#object-list li button.restyle")
        WebDriverWait(d, 30).until(lambda d: shown()[0] == j)
        assert shown()[1] == (answer["clusters"][j]["code"] if j is not None else None)
        assert [on for _, on in chips()] == [i == (k if j is None else j) for i in range(k + 1)]
    click("#object-list li button.style-chip", 1)  # a swatch picks its cluster directly
    WebDriverWait(d, 30).until(lambda d: shown()[0] == 1)
    assert [on for _, on in chips()] == [i == 1 for i in range(k + 1)]
    _wait_for_new_image(d, None)
    _screenshot(d, tmp_path, "web_editor_styles.png")
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


def _wait_for_codes(driver, expected, timeout=60):
    """Until which objects have an explicit code is ``expected`` (a list of booleans)."""
    try:
        WebDriverWait(driver, timeout).until(
            lambda d: d.execute_script("return state.objects.map((o) => !!o.code)") == expected)
    except TimeoutException:
        raise AssertionError(f"the objects' codes never became {expected}; the page says: {_status(driver)!r}, "
                             f"{driver.find_element(By.ID, 'ref-note').text!r}") from None


def test_appearance_from_a_picture_applies_to_the_scene_and_to_one_object_and_undoes(server, browser, tmp_path):
    from PIL import Image, ImageDraw

    d = browser
    d.set_window_size(1400, 1250)  # the appearance panel in the screenshot
    d.get(server.url)
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#object-name option"))
    assert not d.find_element(By.ID, "apply-scene").is_enabled()  # no picture yet
    d.find_element(By.ID, "auto-update").click()  # off: one image of the three objects (Apply draws anyway)
    for name in ("sky", "grass", "circle"):
        _add_object(d, name)
    d.find_element(By.ID, "generate").click()
    first = _wait_for_new_image(d, None)

    # a picture (wider than high: the page scales it to the model's square size) opened with the file picker
    picture = Image.new("RGB", (96, 64), (70, 130, 230))
    draw = ImageDraw.Draw(picture)
    draw.rectangle([0, 40, 96, 64], fill=(40, 170, 60))
    draw.ellipse([30, 15, 60, 40], fill=(220, 30, 30))
    path = tmp_path / "reference.png"
    picture.save(path)
    d.find_element(By.ID, "ref-file").send_keys(str(path))
    canvas = d.find_element(By.ID, "ref-canvas")
    WebDriverWait(d, 30).until(lambda d: canvas.is_displayed())
    assert not d.find_element(By.ID, "ref-empty").is_displayed()
    assert canvas.size["width"] > canvas.size["height"]  # shown with its own proportions
    # the proposed boxes: the scene's objects where they are now; accepted as they are
    shown = d.execute_script("return state.objects.map((o) => o.shown)")
    boxes = d.execute_script("return appearance.boxes.map((b) => [b.name, b.box])")
    assert [name for name, _ in boxes] == ["sky", "grass", "circle"]
    assert [box for _, box in boxes] == shown
    size = d.execute_script("return state.info.image_size")
    sent = d.execute_script("return appearance.picture.url")
    assert sent.startswith("data:image/png;base64,") and len(sent) < d.execute_script("return state.info.max_body")
    decoded = "const i = new Image(); i.src = appearance.picture.url; return i.decode().then(() => [i.width, i.height])"
    assert d.execute_script(decoded) == [size, size]

    # Apply to scene: every object takes the code of its class's box, and the image is drawn again
    d.find_element(By.ID, "apply-scene").click()
    applied = _wait_for_new_image(d, first)
    _wait_for_codes(d, [True, True, True])
    codes = d.execute_script("return state.objects.map((o) => o.code)")
    assert [len(c) for c in codes] == [d.execute_script("return state.info.style_dim")] * 3
    assert "Applied reference.png's appearance to 0: sky, 1: grass, 2: circle" in d.find_element(By.ID, "ref-note").text
    undo = d.find_element(By.ID, "edit-undo")
    assert undo.is_displayed() and undo.is_enabled()  # the Undo of edits, shown without a CLIP too
    _screenshot(d, tmp_path, "web_editor_appearance.png")

    # Undo: the codes before (none) and the image before, exactly
    undo.click()
    _wait_for_codes(d, [False, False, False])
    assert _image_src(d) == first and "Undone: the image before the appearance change" in _status(d)
    assert not undo.is_enabled()

    # draw a box (a circle) on the picture, select the scene's grass, and give it that box's look alone
    d.find_element(By.ID, "ref-draw").click()
    Select(d.find_element(By.ID, "ref-class")).select_by_visible_text("circle")
    w, h = canvas.size["width"], canvas.size["height"]
    (ActionChains(d).move_to_element_with_offset(canvas, -w // 8, -h // 4).click_and_hold()
     .move_by_offset(w // 16, h // 16).move_by_offset(w // 16, h // 8).release().perform())
    boxes = d.execute_script("return appearance.boxes.map((b) => b.name)")
    assert boxes == ["sky", "grass", "circle", "circle"]
    assert d.execute_script("return appearance.picked === appearance.boxes[3].id")
    assert d.find_element(By.ID, "ref-class-label").text == "Box 3"
    ActionChains(d).move_to_element(d.find_elements(By.CSS_SELECTOR, "#object-list li")[1]).perform()
    assert d.find_element(By.ID, "ref-target").text == "Selected object 1: grass \u2190 box 3: circle"
    d.find_element(By.ID, "apply-selected").click()
    _wait_for_codes(d, [False, True, False])
    one = _wait_for_new_image(d, first)
    assert one not in (first, applied)

    # delete the drawn box; Undo gives the scene back as it was
    d.find_element(By.ID, "ref-delete").click()
    assert d.execute_script("return appearance.boxes.map((b) => b.name)") == ["sky", "grass", "circle"]
    d.find_element(By.ID, "edit-undo").click()
    _wait_for_codes(d, [False, False, False])
    assert _image_src(d) == first

    # a picture dropped on the panel opens too (a drop event as the browser sends it for a file)
    d.execute_script("""
        const c = document.createElement("canvas"); c.width = 40; c.height = 40;
        const ctx = c.getContext("2d"); ctx.fillStyle = "#3070e0"; ctx.fillRect(0, 0, 40, 40);
        c.toBlob((blob) => {
          const files = new DataTransfer();
          files.items.add(new File([blob], "dropped.png", {type: "image/png"}));
          const panel = document.getElementById("appearance-panel");
          for (const kind of ["dragenter", "dragover", "drop"]) {
            panel.dispatchEvent(new DragEvent(kind, {dataTransfer: files, bubbles: true, cancelable: true}));
          }
        });""")
    WebDriverWait(d, 30).until(lambda d: d.execute_script("return appearance.picture.name") == "dropped.png")
    assert d.execute_script("return appearance.boxes.map((b) => b.name)") == ["sky", "grass", "circle"]
    assert "dragover" not in d.find_element(By.ID, "appearance-panel").get_attribute("class")
    severe = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
