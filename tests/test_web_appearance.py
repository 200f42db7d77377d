"""POST /api/appearance, the editor's "Appearance from a picture": a picture and what it shows where
-> each reference object's style code (the appearance encoder's) and one code or null per scene
object (ReferenceStyles' by-class / by-mapping rule); what the page then sends to /api/generate as
explicit codes. Bad input is one 400 line naming its field, an oversize body or picture a 413, a
model without an appearance encoder a 409; the encoding takes a model turn. The page's side is
in test_browser.py."""
import base64
import io
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from layout2img.generate import load_model
from layout2img.pipeline.appearance import ReferenceStyles
from layout2img.web.appearance import MAX_IMAGE_BODY, MAX_IMAGE_SIDE
from layout2img.web.server import MAX_BODY, build_app

LOCAL = "http://127.0.0.1:7860"  # a loopback Host, as the page on this machine sends
REFERENCE = {"objects": ["sky", "grass", "circle"],
             "boxes": [[0.0, 0.0, 1.0, 0.6], [0.0, 0.6, 1.0, 1.0], [0.3, 0.25, 0.65, 0.6]]}
TARGETS = ["circle", "sky", "square", "circle"]
SCENE = {"graph": {"objects": TARGETS, "relationships": [[0, "above", 2]]}, "style_seeds": [1, 2, 3, 4]}


def picture(width=48, height=40, mode="RGB"):
    """Blue sky over green grass with a red circle: what REFERENCE says is where."""
    image = Image.new(mode, (width, height), (70, 130, 230) if mode == "RGB" else (70, 130, 230, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, int(0.6 * height), width, height], fill=(40, 170, 60))
    draw.ellipse([int(0.3 * width), int(0.25 * height), int(0.65 * width), int(0.6 * height)], fill=(220, 30, 30))
    return image


def data_url(image, kind="PNG"):
    buf = io.BytesIO()
    image.save(buf, format=kind)
    return f"data:image/{kind.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def request(**changes):
    body = {"image": data_url(picture()), "reference": REFERENCE, "targets": TARGETS}
    body.update(changes)
    return body


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return load_model(tiny_checkpoint, "cpu")


@pytest.fixture(scope="module")
def app(model):
    return build_app(model, quiet=True)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=LOCAL) as c:
        yield c


def post(client, body, path="/api/appearance", raw=None):
    kwargs = {"content": raw} if raw is not None else {"json": body}
    res = client.post(path, headers={"Content-Type": "application/json"}, **kwargs)
    return res.status_code, res.json()


def test_info_says_the_model_takes_appearance_from_a_picture(client):
    info = client.get("/api/info").json()
    assert info["appearance"] is True and info["appearance_reason"] is None
    assert info["max_image_body"] == MAX_IMAGE_BODY and info["max_body"] == MAX_BODY
    assert client.get("/appearance.js").status_code == 200
    assert b'<script src="/appearance.js"' in client.get("/").content


def test_the_codes_are_reference_styles_codes(client, model):
    status, out = post(client, request())
    assert status == 200, out
    ref = ReferenceStyles.from_image(model, picture(), REFERENCE)
    assert out["reference_codes"] == ref.codes.tolist()
    by_class = ref.codes_for(TARGETS)
    assert sorted(by_class) == [0, 1, 3]  # the picture has no square: that object keeps its own code
    assert out["codes"] == [by_class[0].tolist(), by_class[1].tolist(), None, by_class[3].tolist()]
    assert out["codes"][0] == out["codes"][3] == ref.codes[2].tolist()  # both circles: the picture's one circle
    assert len(out["codes"][0]) == model.style_dim and out["ms"] >= 0

    # a mapping {target: reference object} wins over the class; JSON keys are strings
    status, mapped = post(client, request(mapping={"2": 2, "0": 0}))
    assert status == 200, mapped
    expected = ref.codes_for(TARGETS, {2: 2, 0: 0})
    assert mapped["codes"] == [expected[i].tolist() if i in expected else None for i in range(4)]
    assert mapped["codes"][2] == ref.codes[2].tolist() and mapped["codes"][0] == ref.codes[0].tolist()


def test_the_scene_drawn_with_the_codes_differs_from_the_one_without(client):
    _, out = post(client, request())
    status, plain = post(client, SCENE, path="/api/generate")
    assert status == 200, plain
    status, styled = post(client, {**SCENE, "style_codes": out["codes"]}, path="/api/generate")
    assert status == 200, styled
    assert styled["boxes"] == plain["boxes"]  # the layout stays, the look changes

    def pixels(url):
        return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"), np.int16)

    assert np.abs(pixels(styled["image"]) - pixels(plain["image"])).max() > 0
    # and again the same: the codes, not chance, make the difference
    assert post(client, {**SCENE, "style_codes": out["codes"]}, path="/api/generate")[1]["image"] == styled["image"]


def test_other_formats_and_transparency(client, model):
    # JPEG is read too; a transparent picture is laid over white (as the page's canvas does)
    status, out = post(client, request(image=data_url(picture(), "JPEG")))
    assert status == 200 and len(out["reference_codes"]) == 3
    rgba = picture(mode="RGBA")
    rgba.putpixel((0, 0), (0, 0, 0, 0))
    status, out = post(client, request(image=data_url(rgba)))
    assert status == 200, out
    white = picture()
    white.putpixel((0, 0), (255, 255, 255))
    assert out["reference_codes"] == ReferenceStyles.from_image(model, white, REFERENCE).codes.tolist()


TINY_PNG = data_url(picture(8, 8))
CUT_PNG = "data:image/png;base64," + base64.b64encode(base64.b64decode(TINY_PNG.split(",")[1])[:60]).decode()


@pytest.mark.parametrize("changes, words", [
    ({"image": "data:image/png;base64,@@@not base64@@@"}, "'image': the data URL's base64 data is malformed"),
    ({"image": "data:image/png;base64," + base64.b64encode(b"hello, no picture").decode()}, "'image': not a picture"),
    ({"image": "https://example.com/a.png"}, "'image' must be a picture as a base64 data URL"),
    ({"image": "data:text/plain;base64,aGVsbG8="}, "'image' must be a picture as a base64 data URL"),
    ({"image": CUT_PNG}, "'image': the PNG data is damaged or cut short"),
    ({"image": 3}, "'image' must be a picture as a base64 data URL"),
    ({"reference": {"objects": ["sky", "grass"], "boxes": [[0, 0, 1, 1]]}},
     "'reference.boxes' must hold one box per reference object (2), got 1"),
    ({"reference": {"objects": ["sky", "circel"], "boxes": [[0, 0, 1, 1], [0, 0, 1, 1]]}},
     "'reference.objects[1]': unknown object 'circel'"),
    ({"reference": {"objects": ["__image__"], "boxes": [[0, 0, 1, 1]]}}, "'reference.objects[0]': unknown object"),
    ({"reference": {"objects": [], "boxes": []}}, "'reference.objects'"),
    ({"reference": {"objects": ["sky"], "boxes": [[0.5, 0, 0.2, 1]]}}, "'reference.boxes[0]' box [0.5, 0, 0.2, 1]"),
    ({"reference": {"objects": ["sky"], "boxes": [[0, 0, 1, 1]], "relationships": []}},
     "'reference' unknown field 'relationships'"),
    ({"reference": {"objects": ["sky"]}}, "missing 'reference.boxes'"),
    ({"targets": ["circle", "squar"]}, "'targets[1]': unknown object 'squar'"),
    ({"targets": "circle"}, "'targets'"),
    ({"mapping": {"7": 0}}, "'mapping': target object 7 does not exist (4 targets)"),
    ({"mapping": {"0": 3}}, "'mapping': target 0: reference object 3 does not exist (3 reference objects)"),
    ({"mapping": {"zero": 1}}, "'mapping' must map object indices of targets to reference object indices"),
    ({"mapping": {"0": -1}}, "'mapping' must map"),
    ({"mapping": [[0, 1]]}, "'mapping' must map"),
    ({"colour": True}, "unknown field 'colour' (known: image, reference, targets, mapping)"),
])
def test_bad_input_is_one_400_line_naming_the_field(client, changes, words):
    status, out = post(client, request(**changes))
    assert status == 400, out
    assert words in out["error"] and "\n" not in out["error"] and out["errors"][0] == out["error"]


def test_missing_fields_and_too_many_objects(client, app):
    status, out = post(client, {"image": TINY_PNG, "targets": []})
    assert status == 400 and out["error"] == "missing 'reference'"
    limit = app.state.service.max_objects
    many = {"objects": ["sky"] * (limit + 1), "boxes": [[0, 0, 1, 1]] * (limit + 1)}
    status, out = post(client, request(reference=many))
    assert status == 400 and f"'reference.objects' holds {limit + 1} objects" in out["error"]


def test_oversize_bodies_and_pictures_are_refused(client):
    # a body over the limit: refused unread (its Content-Length), or as it comes (chunked)
    status, out = post(client, None, raw=b" " * (MAX_IMAGE_BODY + 1))
    assert status == 413 and f"more than the limit of {MAX_IMAGE_BODY}" in out["error"]

    def chunked():
        for _ in range(MAX_IMAGE_BODY // 65536 + 2):
            yield b" " * 65536

    res = client.post("/api/appearance", content=chunked(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413 and f"limit of {MAX_IMAGE_BODY}" in res.json()["error"]
    # a picture larger than MAX_BODY fits this endpoint's limit (the other endpoints keep theirs)
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    body = request(image=data_url(noise))
    assert MAX_BODY < len(body["image"]) < MAX_IMAGE_BODY
    assert post(client, body)[0] == 200
    status, out = post(client, {**SCENE, "pad": body["image"]}, path="/api/generate")
    assert status == 413 and f"limit of {MAX_BODY}" in out["error"]
    # a small file of a huge picture is refused before its pixels are decoded
    wide = Image.new("RGB", (MAX_IMAGE_SIDE + 1, 4))
    status, out = post(client, request(image=data_url(wide)))
    assert status == 413 and out["error"].startswith(f"'image' is {MAX_IMAGE_SIDE + 1}x4 pixels")


def test_the_encoding_waits_for_its_model_turn_and_busy_is_429(app, client):
    service = app.state.service
    answers = []
    with service.turns.background():  # an edit step holds the model
        worker = threading.Thread(target=lambda: answers.append(post(client, request())))
        worker.start()
        time.sleep(0.5)
        assert not answers  # waiting for the model
    worker.join(60)
    assert answers and answers[0][0] == 200
    service.max_waiting, old = 0, service.max_waiting
    try:
        status, out = post(client, request())
        assert status == 429 and "busy" in out["error"]
    finally:
        service.max_waiting = old


def test_a_model_without_an_appearance_encoder_says_so(tiny_checkpoint):
    model = load_model(tiny_checkpoint, "cpu")
    model.encoder = None  # as a model trained without style codes
    with TestClient(build_app(model, quiet=True), base_url=LOCAL) as c:
        info = c.get("/api/info").json()
        assert info["appearance"] is False and "no appearance encoder" in info["appearance_reason"]
        status, out = post(c, request())
        assert status == 409 and "no appearance encoder" in out["error"]


def test_the_schema_describes_the_request(client):
    schema = client.get("/openapi.json").json()
    assert "/api/appearance" in schema["paths"]
    request_schema = schema["components"]["schemas"]["AppearanceRequest"]
    assert set(request_schema["properties"]) == {"image", "reference", "targets", "mapping"}
    assert "circle" in request_schema["properties"]["targets"]["items"]["enum"]
    reference = schema["components"]["schemas"]["ReferenceGraph"]["properties"]
    assert "circle" in reference["objects"]["items"]["enum"] and reference["boxes"]["items"]["maxItems"] == 4
