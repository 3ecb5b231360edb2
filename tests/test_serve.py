"""``buildings serve`` end to end: a real server on localhost, the API's answers (mask PNG, RLE,
GeoJSON in map coordinates for a GeoTIFF) and its 4xx answers to bad uploads, and the page in
headless Chromium: it loads the sample scene, calls the API and draws the buildings over it (the
screenshot is checked for the overlay and kept as serve-page.png in the test's folder, or in
$BUILDINGS_SCREENSHOTS when set)."""

import json
import os
import re
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
    (b"\x89PNG\r\n\x1a\n" + b"\0" * (2 << 20), "huge.png", 413, "upload limit"),
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


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_draws_the_buildings_over_the_sample_in_headless_chromium(server, tmp_path):
    url, _, _ = server
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=900,700", "--virtual-time-budget=30000"]
    # The page fetched the sample, posted it to /predict and counted the building pixels it drew:
    # the count it shows must be the API's own for the same image.
    # Headless Chromium may dump the page before the page's fetch() returns (virtual time does not
    # always wait for it): a dump still showing "predicting" is taken again, a few times at most.
    for _ in range(8):
        dom = subprocess.run([*browser, "--dump-dom", url + "/?sample=1"], capture_output=True, text=True,
                             timeout=180)
        match = re.search(r'data-building-pixels="(\d+)"', dom.stdout)
        if match or "predicting sample.png" not in dom.stdout:
            break
    assert match, "the page drew no prediction: " + dom.stdout[-1500:] + dom.stderr[-1500:]
    with urllib.request.urlopen(url + "/sample.png") as response:
        sample = response.read()
    status, body, _ = post(url + "/predict?format=png", sample, filename="sample.png")
    api_pixels = int(np.count_nonzero(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE)))
    assert status == 200 and int(match.group(1)) == api_pixels > 0
    shot = tmp_path / "serve-page.png"
    for _ in range(8):  # the same race as above: a shot taken before the prediction came back is retaken
        subprocess.run([*browser, f"--screenshot={shot}", url + "/?sample=1"], capture_output=True, timeout=180)
        image = cv2.imread(str(shot))  # BGR
        b, g, r = (image[..., i].astype(int) for i in range(3))
        overlay = (b > 170) & (g > 150) & (r < 90)  # the page's cyan building fill (no such colour in the scene)
        if overlay.sum() > 0.5 * api_pixels:
            break
    if os.environ.get("BUILDINGS_SCREENSHOTS"):
        shutil.copy(shot, os.environ["BUILDINGS_SCREENSHOTS"])
    assert overlay.sum() > 0.5 * api_pixels, "the screenshot shows no building overlay"
