"""What the tests share besides fixtures (those are in conftest.py): paths, readers written
independently of the package, data made to order, a model whose answer is known. Imported by the
tests as ``from helpers import ...`` (tests/ is on the path); conftest.py imports from here too."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BARNARP = Path(os.environ.get("BUILDINGS_BARNARP", ROOT.parent / "shared" / "data" / "barnarp"))


def raw_mask_lines(path: Path) -> list[tuple[str, str]]:
    """The (name, rle) pairs of a barnarp mask CSV read the simplest way, independent of
    buildings.submission, so tests can compare the library against it."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode()
    else:
        text = path.read_text()
    return [tuple(line.split("\t")) for line in text.splitlines() if line]


def damage_jpeg(data: bytes) -> bytes:
    """A JPEG whose entropy-coded scan data is damaged while its structure (headers, start of
    scan, end of image) stays intact: two bytes a third of the way into the scan become a stray
    restart marker, as a flipped bit can make. libjpeg still decodes it: OpenCV returns the image,
    wrong from there on, and only prints "Corrupt JPEG data: premature end of data segment" on
    stderr. (Measured: detected by strict decoding in all of 69 synthetic and barnarp tiles.)"""
    start = data.index(b"\xff\xda")  # start of scan
    at = start + (len(data) - start) // 3
    return data[:at] + b"\xff\xd3" + data[at + 2:]


def rezip(source: Path, target: Path, edit) -> Path:
    """A copy of zip ``source`` at ``target`` with each member's bytes passed through
    ``edit(name, data)`` (return None to drop the member)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = edit(info.filename, archive.read(info))
            if data is not None:
                out.writestr(info, data)
    return target


def score_back(submission: Path, shape=(512, 512)) -> dict:
    """``buildings score`` reading back a submission that ``buildings predict`` wrote (scored
    against itself: every image must decode, and the score is 1)."""
    import json

    from click.testing import CliRunner

    from buildings.cli import main

    result = CliRunner().invoke(main, ["score", str(submission), str(submission), "--shape",
                                       f"{shape[0]}x{shape[1]}", "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    scores = json.loads(result.output)
    assert scores["dice"] == 1.0
    return scores


def imported_after(*args: str) -> set[str]:
    """The modules a fresh interpreter holds after importing ``args`` (module names), or after
    ``buildings ARGS`` when ``args`` start with ``--cli`` (tests/scripts/imported_modules.py)."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "imported_modules.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "KERAS_BACKEND": "torch"})
    assert done.returncode == 0, done.stderr[-2000:]
    return set(json.loads(done.stdout.splitlines()[-1]))


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the servers tests start listen there only)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the command line in a child process with a file-size limit (a full disk the kernel enforces) ----------
def run_limited(args, limit_bytes: int, cwd=ROOT):
    """The command line with a file-size limit: writing past ``limit_bytes`` fails with EFBIG."""
    import resource
    import signal
    import subprocess
    import sys

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "buildings.cli", *args], cwd=cwd, preexec_fn=limit,
                          env={**os.environ, "KERAS_BACKEND": "torch"}, capture_output=True, text=True, timeout=600)


def error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


# -- tests that run unchanged on torch, jax and tensorflow --------------------------------------------
def to_numpy(x):
    """A tensor of the active backend as a NumPy array."""
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grad(fn, x: np.ndarray):
    """(fn(x), d fn / d x) on the active backend, as NumPy."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        value = fn(t)
        value.backward()
        return value.detach().cpu().numpy(), t.grad.cpu().numpy()
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(x)
        return np.asarray(value), np.asarray(grad)
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(t)
        return value.numpy(), tape.gradient(value, t).numpy()
    raise NotImplementedError(backend)


# -- rasters and a model whose answer is known (GeoTIFF, serve and prediction-rule tests) ----------
CRS = "EPSG:32633"
try:  # the [deploy] extra; tests that need it skip without it
    from rasterio.transform import from_origin

    TRANSFORM = from_origin(500000.0, 5600000.0, 0.5, 0.5)  # x0, y0 (top-left), 0.5 m pixels
except ImportError:  # pragma: no cover
    TRANSFORM = None
HEIGHT, WIDTH = 300, 420
# (row0, col0, row1, col1), end-exclusive. With 128-pixel blocks the second crosses a column border
# (col 128), the third a row border (row 256) and the fourth both (the block corner at 128, 256).
RECTANGLES = [(10, 10, 40, 60), (60, 100, 90, 170), (240, 20, 280, 60), (110, 230, 150, 290)]
SMALL = (200, 380, 204, 384)  # 16 pixels: dropped by --min-area 20


def brightness_model(path):
    """A .keras model at ``path``: logit 20 * (mean RGB brightness in [0, 1] - 0.5), reading the
    normalised input the models get."""
    import keras

    from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1)
    outputs = conv(inputs)
    model = keras.Model(inputs, outputs, name="brightness")
    k = 20.0
    conv.set_weights([(k * IMAGENET_STD / 3.0).reshape(1, 1, 3, 1).astype("float32"),
                      np.array([k * (IMAGENET_MEAN.sum() / 3.0 - 0.5)], "float32")])
    model.save(path)
    return path


def truth_mask(small=True):
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for r0, c0, r1, c1 in RECTANGLES + ([SMALL] if small else []):
        mask[r0:r1, c0:c1] = 1
    return mask


def write_raster(path, *, dtype="uint8", scale=1, bands_first=None):
    """RGB raster (dark background, bright rectangles); ``bands_first``: an extra band put first."""
    mask = truth_mask()
    value = np.where(mask, 230, 30).astype(np.float64) * scale
    bands = [value, value * 0.98, value * 0.95]
    if bands_first is not None:
        bands = [np.full_like(value, bands_first)] + bands
    data = np.stack(bands).astype(dtype)
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", height=HEIGHT, width=WIDTH, count=len(bands), dtype=dtype,
                       crs=CRS, transform=TRANSFORM) as out:
        out.write(data)
    return path


def tiff_header(*tags: int, width: int = 64, height: int = 48, big_endian: bool = False) -> bytes:
    """A TIFF's header and first IFD and nothing else (no pixels): ImageWidth, ImageLength and one
    SHORT entry for each of ``tags`` (33922, 34735, ...: GeoTIFF's). Enough for a header reader;
    anything that reads the image fails on it."""
    import struct

    order = ">" if big_endian else "<"
    entries = [(256, width), (257, height), *((tag, 1) for tag in tags)]
    ifd = struct.pack(order + "H", len(entries))
    for tag, value in sorted(entries):
        ifd += struct.pack(order + "HHI", tag, 3, 1) + struct.pack(order + "H", value) + b"\0\0"
    return (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8) + ifd + struct.pack(order + "I", 0)
