"""``buildings serve`` end to end: a real server on localhost, the API's answers (mask PNG, RLE,
GeoJSON in map coordinates for a GeoTIFF) and its 4xx answers to bad uploads, and the page in
headless Chromium: it loads the sample scene, calls the API and draws the buildings over it (the
screenshot is checked for the overlay and kept as serve-page.png in the test's folder, or in
$BUILDINGS_SCREENSHOTS when set)."""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import cv2
import numpy as np
import pytest
from conftest import ROOT

pytest.importorskip("fastapi", reason="the [deploy] extra (fastapi, uvicorn) is not installed")
pytest.importorskip("rasterio", reason="the [deploy] extra is not installed")
from test_geo import CRS, RECTANGLES, TRANSFORM, brightness_model, truth_mask, write_raster  # noqa: E402

from buildings.formats.rle import decode_rle  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    checkpoint = brightness_model(folder / "brightness.keras")
    port = free_port()
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    process = subprocess.Popen([sys.executable, "-m", "buildings.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), "--max-upload-mb", "1"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:
                    health = json.load(response)
                    break
            except OSError:
                if process.poll() is not None:
                    pytest.fail("serve exited: " + process.stdout.read()[-2000:])
                time.sleep(0.5)
        else:
            pytest.fail("serve did not answer /health in 120 s")
        yield url, health, folder
    finally:
        process.terminate()
        process.wait(timeout=30)


def post(url: str, data: bytes | None, filename="tile.png", field="file"):
    """(status, body bytes, content type) of a multipart POST."""
    boundary = uuid.uuid4().hex
    body = b""
    if data is not None:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    else:
        body = f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("content-type")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type")


def scene() -> tuple[bytes, np.ndarray]:
    mask = truth_mask()
    image = np.where(mask[..., None], 230, 30).astype(np.uint8).repeat(3, axis=2)
    return cv2.imencode(".png", image)[1].tobytes(), mask


def test_health_names_the_model(server):
    _, health, _ = server
    assert health["status"] == "ok" and health["models"] == ["brightness"] and health["num_classes"] == 1


def test_predict_answers_a_mask_png_and_rle(server):
    url, _, _ = server
    data, mask = scene()
    status, body, kind = post(url + "/predict?format=png", data)
    assert status == 200 and kind == "image/png", body[:500]
    got = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(got > 0, mask > 0)
    status, body, _ = post(url + "/predict?format=rle", data)
    answer = json.loads(body)
    assert status == 200 and answer["building_pixels"] == int(mask.sum())
    assert np.array_equal(decode_rle(answer["rle"], (answer["height"], answer["width"])), mask)


def test_predict_answers_geojson_in_map_coordinates_for_a_geotiff(server, tmp_path):
    url, _, _ = server
    source = write_raster(tmp_path / "ortho.tif")
    status, body, kind = post(url + "/predict?format=geojson", source.read_bytes(), filename="ortho.tif")
    assert status == 200 and kind.startswith("application/geo+json")
    collection = json.loads(body)
    assert "32633" in collection["crs"]["properties"]["name"] and CRS.endswith("32633")
    assert len(collection["features"]) == len(RECTANGLES) + 1  # min-area 0 here: the small one too
    xs = sorted(min(x for x, _ in f["geometry"]["coordinates"][0]) for f in collection["features"])
    expected = sorted((TRANSFORM * (c0, r0))[0] for r0, c0, _, _ in RECTANGLES + [(200, 380, 204, 384)])
    assert xs == pytest.approx(expected)


@pytest.mark.parametrize(("data", "filename", "code", "says"), [
    (b"", "empty.png", 400, "empty file"),
    (b"this is not an image at all", "notes.png", 400, "notes.png: not a decodable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * (16 << 20), "huge.png", 413, "upload limit"),
    (None, "", 422, "file"),
])
def test_bad_uploads_get_a_clear_4xx(server, data, filename, code, says):
    url, _, _ = server
    status, body, _ = post(url + "/predict?format=png", data, filename=filename)
    assert status == code, body[:300]
    assert says in json.dumps(json.loads(body)["detail"])


def test_unknown_format_is_refused(server):
    url, _, _ = server
    status, body, _ = post(url + "/predict?format=tiff", scene()[0])
    assert status == 400 and "use png, rle, geojson or probability" in json.loads(body)["detail"]


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: fd 3
    carries our commands, fd 4 its answers, NUL-terminated JSON), so the test waits on the page's own
    state instead of guessing when a ``--dump-dom`` should happen: no extra dependency, no port."""

    def __init__(self, url: str, profile):
        ours_read, its_write = os.pipe()
        its_read, ours_write = os.pipe()

        def to_fds_3_and_4():  # in the child, before exec: move its two ends to the fds Chromium expects
            high_read, high_write = os.dup(its_read), os.dup(its_write)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=900,700",
             f"--user-data-dir={profile}", "--remote-debugging-pipe", url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=to_fds_3_and_4, pass_fds=(3, 4))
        os.close(its_read)
        os.close(its_write)
        self.send_fd, self.answers = ours_write, os.fdopen(ours_read, "rb")
        self.buffer, self.next_id = b"", 0
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def call(self, method: str, session: str | None = None, **params):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.send_fd, json.dumps(message).encode() + b"\0")
        while True:  # skip events and other answers until ours comes
            while b"\0" not in self.buffer:
                chunk = self.answers.read1(1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium closed its pipe while we waited for {method}")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)["result"].get("value")

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self.send_fd)
        self.answers.close()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_draws_the_buildings_over_the_sample_in_headless_chromium(server, tmp_path):
    url, _, _ = server
    # The page fetches the sample, posts it to /predict and counts the building pixels it draws:
    # the count it shows must be the API's own for the same image.
    browser = Chromium(url + "/?sample=1", tmp_path / "profile")
    try:
        for _ in range(240):  # the page's status line and its drawn count, polled for up to 2 minutes
            shown = browser.evaluate("document.getElementById('status').textContent")
            pixels = browser.evaluate("document.body.dataset.buildingPixels || ''")
            if pixels or "error" in (shown or ""):
                break
            time.sleep(0.5)
        assert pixels, f"the page drew no prediction; its status line said: {shown!r}"
        shot = tmp_path / "serve-page.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", browser.session)["data"]))
    finally:
        browser.close()
    with urllib.request.urlopen(url + "/sample.png") as response:
        sample = response.read()
    status, body, _ = post(url + "/predict?format=png", sample, filename="sample.png")
    api_pixels = int(np.count_nonzero(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE)))
    assert status == 200 and int(pixels) == api_pixels > 0
    image = cv2.imread(str(shot))  # BGR
    b, g, r = (image[..., i].astype(int) for i in range(3))
    overlay = (b > 170) & (g > 150) & (r < 90)  # the page's cyan building fill (no such colour in the scene)
    if os.environ.get("BUILDINGS_SCREENSHOTS"):
        shutil.copy(shot, os.environ["BUILDINGS_SCREENSHOTS"])
    assert overlay.sum() > 0.5 * api_pixels, "the screenshot shows no building overlay"
