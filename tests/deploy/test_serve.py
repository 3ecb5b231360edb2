"""``buildings serve`` end to end: real servers on localhost (one with the default rule, one started
with ``--min-area 30 --fill-holes``), the API's answers (mask PNG, RLE, GeoJSON in map coordinates
for a GeoTIFF, with the CLI's property names) and its 4xx answers to bad uploads; the API's mask at
any threshold is the rule's (post-processing included); and the page in headless Chromium: it loads
the sample scene, its raw preview says it is one, and the mask it then shows is the API's, pixel for
pixel, at the served threshold and at the one the slider is moved to (the screenshot is checked for
the overlay and kept as serve-page.png in the test's folder, or in $BUILDINGS_SCREENSHOTS when set).
Exposure and budgets (issue 25): the image size read from PNG / JPEG / BMP / TIFF / BigTIFF headers,
the pixel budget, a BigTIFF's GeoJSON in map coordinates, messages naming the upload (never a server
path), the Host allow-list, the same-origin check on POST, no /docs, and the start-up refusal to serve
beyond loopback without a token (tested through the CLI with the server itself replaced: nothing is
ever bound beyond 127.0.0.1). The load, the bombs, the queue and the timeouts: test_serve_load.py."""

import base64
import dataclasses
import http.client
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import cv2
import numpy as np
import pytest
from helpers import CRS, RECTANGLES, ROOT, TRANSFORM, brightness_model, free_port, truth_mask, write_raster

pytest.importorskip("fastapi", reason="the [deploy] extra (fastapi, uvicorn) is not installed")
pytest.importorskip("rasterio", reason="the [deploy] extra is not installed")

from buildings.formats.images import decode_image  # noqa: E402
from buildings.formats.rle import decode_rle  # noqa: E402
from buildings.inference import MaskRule, Postprocess, Predictor  # noqa: E402
from buildings.inference.prediction import above  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


RULED = ["--min-area", "30", "--fill-holes"]  # the second server's rule flags
MAX_PIXELS = 1_000_000  # --max-pixels of both servers: the test images are 512x512 and 420x300
RULE = MaskRule(0.5, Postprocess(min_area=30, fill_holes=True))  # ... and the rule they make
MOVED = 0.3  # where the tests move the threshold: on the sample, min-area and hole filling both change the mask


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return brightness_model(tmp_path_factory.mktemp("model") / "brightness.keras")


def start_server(checkpoint, *flags):
    """Run ``buildings serve`` on a free localhost port; yields (url, health) once it answers /health."""
    port = free_port()
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    process = subprocess.Popen([sys.executable, "-m", "buildings.cli", "serve", "--checkpoint", str(checkpoint),
                                "--port", str(port), "--max-upload-mb", "1", "--max-pixels", str(MAX_PIXELS), *flags], cwd=ROOT, env=env,
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
        yield url, health
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(checkpoint):
    yield from start_server(checkpoint)


@pytest.fixture(scope="module")
def ruled_server(checkpoint):
    yield from start_server(checkpoint, *RULED)


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory, synth_dataset):
    """A checkpoint in a run folder whose config.json names the built synthetic dataset, as
    ``buildings fit`` writes it (``{"options": FitConfig as a dict, ...}``)."""
    from buildings.config import FitConfig

    run = tmp_path_factory.mktemp("run")
    checkpoint = brightness_model(run / "best.keras")
    options = dataclasses.asdict(FitConfig(data=str(synth_dataset), run_dir=str(run)))
    (run / "config.json").write_text(json.dumps({"options": options, "backend": "torch"}))
    return checkpoint


@pytest.fixture(scope="module")
def dataset_server(run_checkpoint):
    yield from start_server(run_checkpoint)


def first_validation_tile_with_buildings(dataset) -> tuple[str, np.ndarray, np.ndarray]:
    """(name, RGB image, truth) of the tile the page's sample should be, read here from the split."""
    from buildings.data.splits import decode_record, open_split, record_name

    source = open_split(dataset, "validation")
    for index in range(len(source)):
        image, truth = decode_record(source[index])
        if truth.any():
            return record_name(source[index]), image, truth
    pytest.fail(f"no validation tile with buildings in {dataset}")


@pytest.fixture(scope="module")
def sample(checkpoint, ruled_server):
    """(sample.png's bytes as the server gives them, their probabilities by an in-process predictor of
    the same checkpoint: what the server computes for them)."""
    url, _ = ruled_server
    with urllib.request.urlopen(url + "/sample.png") as response:
        data = response.read()
    predictor = Predictor.from_checkpoints([checkpoint], rule=RULE)
    return data, predictor.probabilities(decode_image(data, "sample.png"))


def post(url: str, data: bytes | None, filename="tile.png", field="file", headers=None):
    """(status, body bytes, content type) of a multipart POST."""
    boundary = uuid.uuid4().hex
    body = b""
    if data is not None:
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    else:
        body = f"--{boundary}--\r\n".encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read(), response.headers.get("content-type")
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers.get("content-type")


def scene() -> tuple[bytes, np.ndarray]:
    mask = truth_mask()
    image = np.where(mask[..., None], 230, 30).astype(np.uint8).repeat(3, axis=2)
    return cv2.imencode(".png", image)[1].tobytes(), mask


def png_mask(body: bytes) -> np.ndarray:
    """The 0/1 mask of a mask PNG the API answered."""
    return (cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED) > 0).astype(np.uint8)


def api_mask(url: str, data: bytes, threshold: float | None = None) -> np.ndarray:
    query = "" if threshold is None else f"&threshold={threshold}"
    status, body, kind = post(url + "/predict?format=png" + query, data, filename="sample.png")
    assert status == 200 and kind == "image/png", body[:300]
    return png_mask(body)


def fnv1a(data: bytes) -> str:
    """The page's maskHash: FNV-1a 32-bit, 8 hex digits."""
    h = 0x811C9DC5
    for byte in data:
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def test_health_names_the_model_and_the_rule(server, ruled_server):
    _, health = server
    assert health["status"] == "ok" and health["models"] == ["brightness"] and health["num_classes"] == 1
    assert health["rule"] == "threshold 0.5, no post-processing" and health["min_area"] == 0
    _, health = ruled_server
    assert health["rule"] == RULE.describe() == "threshold 0.5, min-area 30, fill holes"
    assert (health["threshold"], health["min_area"], health["fill_holes"], health["postprocess"]) == \
        (0.5, 30, True, "min-area 30, fill holes")
    assert health["empty_below_area"] == 0 and health["empty_below_peak"] == 0 and health["vote"] is False


@pytest.mark.parametrize("threshold", [None, MOVED, 0.4])
def test_the_api_mask_at_any_threshold_is_the_rule_with_its_post_processing(ruled_server, sample, threshold):
    # Served with --min-area 30 --fill-holes: the mask of ?threshold=t is that rule at t, not the raw threshold.
    url, _ = ruled_server
    data, probs = sample
    rule = RULE if threshold is None else RULE.with_threshold(threshold)
    expected = rule.mask(probs)
    got = api_mask(url, data, threshold)
    assert np.array_equal(got, expected), f"{np.count_nonzero(got != expected)} pixels differ"
    assert np.count_nonzero(expected != above(probs[..., 0], rule.threshold)) > 0  # the post-processing shows
    query = "" if threshold is None else f"&threshold={threshold}"
    status, body, _ = post(url + "/predict?format=rle" + query, data, filename="sample.png")
    answer = json.loads(body)
    assert status == 200 and answer["building_pixels"] == int(expected.sum())
    assert np.array_equal(decode_rle(answer["rle"], (answer["height"], answer["width"])), expected)
    status, body, _ = post(url + "/predict?format=geojson" + query, data, filename="sample.png")
    features = json.loads(body)["features"]  # the polygons are the rule's mask's buildings, none dropped again
    count, _ = cv2.connectedComponents(expected, connectivity=4)
    assert status == 200 and len(features) == count - 1
    assert sum(f["properties"]["pixels"] for f in features) == int(expected.sum())


def test_the_sample_is_a_validation_tile_of_the_dataset_the_runs_config_names(dataset_server, synth_dataset):
    url, health = dataset_server
    name, image, truth = first_validation_tile_with_buildings(synth_dataset)
    with urllib.request.urlopen(url + "/sample.png", timeout=30) as response:
        data = response.read()
    assert np.array_equal(decode_image(data, "sample.png"), image)  # that tile, pixel for pixel
    label = health["sample"]["label"]
    assert health["sample"]["synthetic"] is False and "synthetic" not in label
    assert f"validation tile {name} of tianchi_buildings/val20" in label, label
    assert f"({100 * truth.mean():.1f} % building in its truth)" in label, label


def test_without_the_models_dataset_the_sample_is_synthetic_and_says_so(server, tmp_path):
    from buildings.config import FitConfig
    from buildings.data.synth import synth_scene
    from buildings.serve import SYNTHETIC_LABEL, find_sample

    url, health = server  # its checkpoint has no run folder around it
    assert health["sample"] == {"label": SYNTHETIC_LABEL, "synthetic": True}
    assert SYNTHETIC_LABEL == "synthetic sample: not like real imagery"
    with urllib.request.urlopen(url + "/sample.png", timeout=30) as response:
        data = response.read()
    scene_bgr, _ = synth_scene(np.random.default_rng(7), 512, p_empty=0.0)
    assert np.array_equal(decode_image(data, "sample.png"), cv2.cvtColor(scene_bgr, cv2.COLOR_BGR2RGB))
    # Why, for the log: no config.json; a config.json naming a dataset that is not here.
    alone = find_sample(tmp_path / "best.keras")
    assert alone.synthetic and alone.label == SYNTHETIC_LABEL and "no run config.json beside" in alone.reason
    gone = tmp_path / "gone"
    (tmp_path / "config.json").write_text(json.dumps({"options": dataclasses.asdict(FitConfig(data=str(gone)))}))
    missing = find_sample(tmp_path / "best.keras")
    assert missing.synthetic and "no dataset" in missing.reason and str(gone) in missing.reason, missing.reason


def test_predict_answers_a_mask_png_and_rle(server):
    url, _ = server
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
    url, _ = server
    source = write_raster(tmp_path / "ortho.tif")
    status, body, kind = post(url + "/predict?format=geojson", source.read_bytes(), filename="ortho.tif")
    assert status == 200 and kind.startswith("application/geo+json")
    collection = json.loads(body)
    assert "32633" in collection["crs"]["properties"]["name"] and CRS.endswith("32633")
    assert len(collection["features"]) == len(RECTANGLES) + 1  # min-area 0 here: the small one too
    xs = sorted(min(x for x, _ in f["geometry"]["coordinates"][0]) for f in collection["features"])
    expected = sorted((TRANSFORM * (c0, r0))[0] for r0, c0, _, _ in RECTANGLES + [(200, 380, 204, 384)])
    assert xs == pytest.approx(expected)
    # The properties `buildings predict --vectorize` writes (geo.vectorize.write_polygons), with its names.
    for feature in collection["features"]:
        properties = feature["properties"]
        assert set(properties) == {"area_m2", "pixels", "mean_probability"}
        assert properties["area_m2"] == pytest.approx(properties["pixels"] * 0.25)  # 0.5 m pixels, rectangles
        assert properties["mean_probability"] > 0.99


def test_geojson_of_a_plain_image_is_in_pixels_named_as_the_cli_names_it(server):
    url, _ = server
    status, body, _ = post(url + "/predict?format=geojson", scene()[0])
    collection = json.loads(body)
    assert status == 200 and "crs" not in collection and len(collection["features"]) == len(RECTANGLES) + 1
    sizes = sorted((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in RECTANGLES + [(200, 380, 204, 384)])
    for feature in collection["features"]:  # no CRS: no area on the ground, and no area under another name
        assert set(feature["properties"]) == {"pixels", "mean_probability"}
    assert sorted(f["properties"]["pixels"] for f in collection["features"]) == sizes


@pytest.mark.parametrize(("data", "filename", "code", "says"), [
    (b"", "empty.png", 400, "empty file"),
    (b"this is not an image at all", "notes.png", 400, "notes.png: not a decodable image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * (16 << 20), "huge.png", 413, "upload limit"),
    (None, "", 422, "file"),
])
def test_bad_uploads_get_a_clear_4xx(server, data, filename, code, says):
    url, _ = server
    status, body, _ = post(url + "/predict?format=png", data, filename=filename)
    assert status == code, body[:300]
    assert says in json.dumps(json.loads(body)["detail"])


def test_unknown_format_is_refused(server):
    url, _ = server
    status, body, _ = post(url + "/predict?format=tiff", scene()[0])
    assert status == 400 and "use png, rle, geojson or probability" in json.loads(body)["detail"]


def test_recent_probabilities_keep_the_last_few_within_their_bytes():
    from buildings.serve import RecentProbabilities

    recent = RecentProbabilities(entries=2, max_bytes=3 * 400)
    arrays = {k: np.zeros((10, 10, 1), np.float32) for k in "abcd"}  # 400 bytes each
    for key in "abc":
        recent.put(key, (arrays[key], None, None))
    assert recent.get("a") is None and recent.get("b")[0] is arrays["b"] and recent.get("c") is not None
    assert not arrays["b"].flags.writeable  # shared between requests: read-only
    recent.put("big", (np.zeros((40, 10, 1), np.float32), None, None))  # 1600 bytes: over the budget, not kept
    assert recent.get("big") is None and recent.get("c") is not None


# -- issue 25: budgets and exposure -----------------------------------------------------------------
def write_bigtiff(path):
    """The helpers' test raster (rectangles, EPSG:32633, 0.5 m pixels) written as a BigTIFF."""
    import rasterio

    mask = truth_mask()
    value = np.where(mask, 230, 30).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", height=mask.shape[0], width=mask.shape[1], count=3, dtype="uint8",
                       crs=CRS, transform=TRANSFORM, BIGTIFF="YES") as out:
        out.write(np.stack([value] * 3))
    return path


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose frame header (SOF) is rewritten to declare width x height."""
    data = bytearray(cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))[1].tobytes())
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize("encoding", ["png", "jpg", "progressive-jpg", "bmp", "tif", "bigtiff", "geotiff"])
def test_image_size_is_read_from_the_header(encoding, tmp_path):
    from buildings.serve import image_size

    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    if encoding == "bigtiff":
        data = write_bigtiff(tmp_path / "big.tif").read_bytes()
        assert data[:4] == b"II+\x00"
        assert image_size(data) == ("BigTIFF", 420, 300)
        return
    if encoding == "geotiff":
        assert image_size(write_raster(tmp_path / "geo.tif").read_bytes()) == ("TIFF", 420, 300)
        return
    params = [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if encoding == "progressive-jpg" else []
    data = cv2.imencode("." + encoding.split("-")[-1], image, params)[1].tobytes()
    assert image_size(data) == ({"jpg": "JPEG", "progressive-jpg": "JPEG", "tif": "TIFF"}.get(encoding, encoding.upper()), 53, 37)


def test_image_size_reads_what_a_bomb_declares_and_refuses_what_it_cannot_read():
    from buildings.serve import image_size

    assert image_size(jpeg_declaring(40000, 40000)) == ("JPEG", 40000, 40000)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 2) + struct.pack(">HHII", 256, 4, 1, 40000) \
        + struct.pack(">HHIHH", 257, 3, 1, 30000, 0) + b"\0" * 4
    assert image_size(tiff) == ("TIFF", 40000, 30000)
    bigtiff = b"II+\x00" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", 2) \
        + struct.pack("<HHQQ", 256, 16, 1, 50000) + struct.pack("<HHQQ", 257, 16, 1, 60000)
    assert image_size(bigtiff) == ("BigTIFF", 50000, 60000)
    for data in (b"", b"GIF89a" + b"\0" * 40, b"\x89PNG\r\n\x1a\n", b"II*\x00\xff\xff\xff\x7f", b"\xff\xd8\xff\xda\0\x02",
                 b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHII", 256, 4, 1, 10)):
        assert image_size(data) is None, data[:12]


def test_an_image_over_the_pixel_budget_is_refused_naming_it_and_its_size(server):
    url, health = server
    assert health["max_pixels"] == MAX_PIXELS
    wide = cv2.imencode(".png", np.zeros((1000, 1001, 3), np.uint8))[1].tobytes()  # 1,001,000 pixels, ~4 KB
    started = time.monotonic()
    status, body, _ = post(url + "/predict?format=png", wide, filename="wide.png")
    detail = json.loads(body)["detail"]
    assert status == 413 and time.monotonic() - started < 5
    assert detail.startswith("wide.png: its PNG header declares 1001x1000 pixels") and "--max-pixels" in detail
    assert "\n" not in detail


def test_a_bigtiff_geojson_comes_back_in_map_coordinates_with_its_crs(server, tmp_path):
    url, _ = server
    data = write_bigtiff(tmp_path / "ortho_big.tif").read_bytes()
    status, body, kind = post(url + "/predict?format=geojson", data, filename="ortho_big.tif")
    assert status == 200 and kind.startswith("application/geo+json"), body[:300]
    collection = json.loads(body)
    assert "32633" in collection["crs"]["properties"]["name"]
    xs = sorted(min(x for x, _ in f["geometry"]["coordinates"][0]) for f in collection["features"])
    expected = sorted((TRANSFORM @ (c0, r0))[0] for r0, c0, _, _ in RECTANGLES + [(200, 380, 204, 384)])
    assert xs == pytest.approx(expected)  # map coordinates (x = 500000 + 0.5 col), not pixels


def test_a_broken_geotiff_is_named_as_uploaded_never_by_a_server_path(server, tmp_path):
    url, _ = server
    data = write_raster(tmp_path / "ortho.tif").read_bytes()
    broken = data[:len(data) // 3]  # the header and IFD intact (GDAL writes them first), the pixels cut
    status, body, _ = post(url + "/predict?format=geojson", broken, filename="cut.tif")
    detail = json.loads(body)["detail"]
    assert status == 400 and detail.startswith("cut.tif:"), detail
    assert "vsimem" not in detail and "/tmp" not in detail and str(tmp_path) not in detail


def raw_request(url: str, method="GET", path="/health", headers=None, body: bytes | None = None):
    """(status, headers, body) of a request with exactly the headers given (Host included)."""
    host, port = url.split("//")[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_a_host_header_not_allowed_is_refused(server):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    for allowed in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        assert raw_request(url, headers={"Host": allowed})[0] == 200, allowed
    for host in (f"evil.example:{port}", "evil.example", f"localhost:{int(port) + 1}", f"127.0.0.1.nip.io:{port}"):
        status, _, body = raw_request(url, headers={"Host": host})
        detail = json.loads(body)["detail"]
        assert status == 400 and f"Host '{host}' is not served here" in detail and "--allow-host" in detail


def test_a_cross_origin_post_is_refused_a_same_origin_one_served(server):
    url, _ = server
    port = url.rsplit(":", 1)[1]
    data = scene()[0]
    status, body, _ = post(url + "/predict?format=rle", data, headers={"Origin": "http://evil.example"})
    assert status == 403 and "origin 'http://evil.example' refused" in json.loads(body)["detail"]
    status, _, _ = post(url + "/predict?format=rle", data, headers={"Origin": "null"})
    assert status == 403
    status, body, _ = post(url + "/predict?format=rle", data, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and json.loads(body)["building_pixels"] == int(truth_mask().sum())


def test_no_api_docs_pages_that_load_outside_scripts(server):
    url, _ = server
    for path in ("/docs", "/redoc", "/openapi.json"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + path, timeout=30)
        assert refused.value.code == 404, path
    with urllib.request.urlopen(url + "/", timeout=30) as response:
        page = response.read().decode()
    assert "<script src" not in page and "cdn" not in page.lower()


@pytest.mark.parametrize(("host", "token", "no_auth", "outcome"), [
    ("127.0.0.1", None, False, None), ("localhost", None, False, None), ("::1", None, False, None),
    ("127.0.0.2", None, False, None), ("0.0.0.0", "t0ken", False, None), ("192.168.1.5", "t0ken", False, None),
    ("0.0.0.0", None, False, "refused"), ("::", None, False, "refused"), ("10.0.0.3", None, False, "refused"),
    ("myhost.lan", None, False, "refused"), ("0.0.0.0", None, True, "warned"), ("0.0.0.0", "t0ken", True, "refused"),
])
def test_check_exposure_wants_a_token_beyond_loopback(host, token, no_auth, outcome):
    from buildings.errors import ConfigError
    from buildings.serve import check_exposure

    if outcome == "refused":
        with pytest.raises(ConfigError) as refused:
            check_exposure(host, token, no_auth)
        assert "\n" not in str(refused.value)
    else:
        warning = check_exposure(host, token, no_auth)
        assert (warning is not None) == (outcome == "warned")
        if warning:
            assert warning.startswith("WARNING: --no-auth") and "WITHOUT AUTHENTICATION" in warning


@pytest.fixture
def no_server(monkeypatch):
    """The CLI's serve with nothing behind it: loading a model or binding a socket fails the test,
    unless ``allow`` is called, which records what serve would have been given instead of binding."""
    import buildings.cli.deploy as deploy
    import buildings.serve

    calls = {}

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded or a server started")

    monkeypatch.setattr(deploy, "open_predictor", fail)
    monkeypatch.setattr(buildings.serve, "serve", fail)

    def allow():
        monkeypatch.setattr(deploy, "open_predictor", lambda ctx, **options: "predictor")
        monkeypatch.setattr(buildings.serve, "serve", lambda predictor, **options: calls.update(options))
        return calls

    return allow


def invoke_serve(*args, env=None):
    from click.testing import CliRunner

    from buildings.cli import main

    return CliRunner().invoke(main, ["serve", "--checkpoint", "never-loaded.keras", *args], env=env)


def test_serve_beyond_loopback_without_a_token_refuses_to_start_in_one_line(no_server):
    result = invoke_serve("--host", "0.0.0.0", env={"BUILDINGS_SERVE_TOKEN": ""})
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: --host 0.0.0.0 is not a loopback address"), lines
    assert "--token" in lines[0] and "--no-auth" in lines[0] and "Traceback" not in result.output


def test_serve_beyond_loopback_with_a_token_or_no_auth_starts(no_server):
    calls = no_server()
    result = invoke_serve("--host", "0.0.0.0", "--allow-host", "buildings.lan", env={"BUILDINGS_SERVE_TOKEN": "s3cret"})
    assert result.exit_code == 0, result.output
    assert calls["token"] == "s3cret" and calls["allow_hosts"] == ("buildings.lan",) and "s3cret" not in result.output
    assert (calls["max_pixels"], calls["queue"], calls["body_timeout"], calls["header_timeout"]) == (8192 ** 2, 8, 30, 10)
    calls.clear()
    result = invoke_serve("--host", "0.0.0.0", "--no-auth", env={"BUILDINGS_SERVE_TOKEN": ""})
    assert result.exit_code == 0 and calls["token"] is None
    assert "WARNING: --no-auth: serving on 0.0.0.0 WITHOUT AUTHENTICATION" in result.output


def test_serve_says_which_sample_its_page_shows_and_why(no_server):
    calls = no_server()
    result = invoke_serve()  # never-loaded.keras: no run folder around it
    assert result.exit_code == 0, result.output
    assert ("the page's synthetic sample: not like real imagery (no run config.json beside never-loaded.keras"
            in result.output), result.output
    assert calls["sample"].synthetic


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
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=900,900",
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
        answer = self.call("Runtime.evaluate", self.session, expression=expression, returnByValue=True)
        if "exceptionDetails" in answer:
            raise RuntimeError(f"{expression[:80]}...: {answer['exceptionDetails'].get('exception', answer)}")
        return answer["result"].get("value")

    def close(self):
        self.process.kill()
        self.process.wait()
        os.close(self.send_fd)
        self.answers.close()


def page_state(browser) -> dict:
    """The page's document.body.dataset and status line ({"status": ""} while it is still loading)."""
    return json.loads(browser.evaluate(
        "JSON.stringify(document.getElementById('status') ? {...document.body.dataset, "
        "status: document.getElementById('status').textContent} : {status: ''})"))


def wait_for(browser, done, what: str, seconds: float = 120) -> dict:
    """The page's state once ``done(state)``, polled; fails naming ``what`` and the status line."""
    deadline = time.monotonic() + seconds
    while True:
        state = page_state(browser)
        if done(state):
            return state
        assert "error" not in state["status"], state["status"]
        assert time.monotonic() < deadline, f"the page never showed {what}; its status line said {state['status']!r}"
        time.sleep(0.25)


def page_mask(browser, state) -> np.ndarray:
    """The mask the page shows (window.buildingsMask, 0/1), as an array."""
    encoded = browser.evaluate("(() => { const m = window.buildingsMask; let s = ''; for (let i = 0; i < m.length; "
                               "i += 8192) s += String.fromCharCode.apply(null, m.subarray(i, i + 8192)); "
                               "return btoa(s); })()")
    width, height = map(int, state["maskSize"].split("x"))
    mask = np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(height, width)
    assert fnv1a(mask.tobytes()) == state["maskHash"] and int(mask.sum()) == int(state["buildingPixels"])
    return mask


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_shows_the_api_mask_pixel_for_pixel_in_headless_chromium(ruled_server, sample, tmp_path):
    # Served with --min-area 30 --fill-holes. The page loads the sample scene, previews the raw
    # threshold (and says so), then shows the API's mask; moved to MOVED, it previews again, and once
    # the slider settles ("change") shows the API's mask at MOVED. Each API mask it shows must be the
    # one the test gets from the API itself for the same upload and threshold, pixel for pixel, and the
    # raw preview must differ from it (min-area and hole filling change the sample's mask).
    url, _ = ruled_server
    data, _ = sample
    _, body, _ = post(url + "/predict?format=probability", data, filename="sample.png")
    probability = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
    browser = Chromium(url + "/?sample=1", tmp_path / "profile")
    try:
        state = wait_for(browser, lambda s: s.get("maskSource") == "api", "the API's mask of the sample")
        assert state["maskThreshold"] == "0.5" and "mask as the API returns it" in state["status"]
        assert "at threshold 0.5, min-area 30, fill holes" in state["status"]
        assert np.array_equal(page_mask(browser, state), api_mask(url, data))
        rule_line = browser.evaluate("document.getElementById('rule').textContent")
        assert "threshold 0.5, min-area 30, fill holes" in rule_line

        state = json.loads(browser.evaluate(  # dragging: the instant preview, labelled as one
            f"(() => {{ const s = document.getElementById('threshold'); s.value = '{MOVED}'; "
            "s.dispatchEvent(new Event('input')); return JSON.stringify({...document.body.dataset, "
            "status: document.getElementById('status').textContent}); })()"))
        assert state["maskSource"] == "preview" and state["maskThreshold"] == str(MOVED)
        assert "raw threshold preview" in state["status"] and "before min-area 30, fill holes" in state["status"]
        preview = page_mask(browser, state)
        assert np.array_equal(preview, (probability >= MOVED * 255).astype(np.uint8))

        browser.evaluate("document.getElementById('threshold').dispatchEvent(new Event('change'))")  # settled
        state = wait_for(browser, lambda s: s.get("maskSource") == "api" and s.get("maskThreshold") == str(MOVED),
                         f"the API's mask at threshold {MOVED}")
        assert f"mask as the API returns it: {state['buildingPixels']} building pixels" in state["status"]
        assert f"at threshold {MOVED}, min-area 30, fill holes" in state["status"]
        shown = page_mask(browser, state)
        shot = tmp_path / "serve-page.png"
        shot.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", browser.session)["data"]))
    finally:
        browser.close()
    expected = api_mask(url, data, MOVED)
    assert np.array_equal(shown, expected), f"{np.count_nonzero(shown != expected)} pixels differ"
    assert state["maskHash"] == fnv1a(expected.tobytes())
    assert int(state["buildingPixels"]) == int(expected.sum()) != int(preview.sum())  # the preview was raw
    image = cv2.imread(str(shot))  # BGR
    b, g, r = (image[..., i].astype(int) for i in range(3))
    overlay = (b > 170) & (g > 150) & (r < 90)  # the page's cyan building fill (no such colour in the scene)
    if os.environ.get("BUILDINGS_SCREENSHOTS"):
        shutil.copy(shot, os.environ["BUILDINGS_SCREENSHOTS"])
    assert overlay.sum() > 0.5 * expected.sum(), "the screenshot shows no building overlay"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_shows_a_validation_tile_of_the_models_data_and_names_it(dataset_server, synth_dataset, tmp_path):
    url, _ = dataset_server
    name, image, truth = first_validation_tile_with_buildings(synth_dataset)
    browser = Chromium(url + "/?sample=1", tmp_path / "profile")
    try:
        state = wait_for(browser, lambda s: s.get("maskSource") == "api", "the API's mask of the sample")
        label = browser.evaluate("document.getElementById('sample-label').textContent")
        shown = page_mask(browser, state)
    finally:
        browser.close()
    assert state["sample"] == "dataset" and f"validation tile {name}" in label and "synthetic" not in label, label
    tile = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert state["maskSize"] == f"{image.shape[1]}x{image.shape[0]}"
    assert np.array_equal(shown, api_mask(url, tile))  # the mask of that very tile


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_labels_a_synthetic_sample_as_not_like_real_imagery(server, tmp_path):
    url, _ = server
    browser = Chromium(url + "/", tmp_path / "profile")
    try:
        state = wait_for(browser, lambda s: s.get("sample"), "what its sample is")
        label = browser.evaluate("document.getElementById('sample-label').textContent")
        kind = browser.evaluate("document.getElementById('sample-label').className")
    finally:
        browser.close()
    assert state["sample"] == "synthetic" and label == "synthetic sample: not like real imagery" and kind == "synthetic"
