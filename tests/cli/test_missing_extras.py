"""A missing optional dependency is one line naming the extra that installs it, said before the work
starts (issue 26): each command below runs in a child process where the module is uninstalled
(``sys.modules[name] = None``), and must end in ``Error: ... needs MODULE: pip install -e ".[EXTRA]"``
with EXTRA the pyproject.toml extra that lists it, having imported no framework (no model built,
no Keras), opened no input and written nothing.

The inputs are stand-ins that only pass the cheap checks (a checkpoint's 4-byte signature, a TIFF
header): a command that went on to load or read one would fail with another message."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT, free_port, tiff_header, write_raster

SCRIPTS = ROOT / "tests" / "scripts"
FRAMEWORKS = ("keras", "torch", "tensorflow", "jax", "onnxruntime")
READERS = ("rasterio", "pyogrio")
DISTRIBUTIONS = {"python_multipart": "python-multipart"}  # import name -> the name pyproject.toml lists
GEOKEYS = 34735  # GeoTIFF's GeoKeyDirectoryTag


def extra_lists(extra: str, module: str) -> bool:
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as handle:
        requirements = tomllib.load(handle)["project"]["optional-dependencies"][extra]
    names = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}
    return DISTRIBUTIONS.get(module, module) in names


def run_without(modules: str, *args) -> tuple[str, set[str]]:
    """The last stderr line of ``buildings ARGS`` with ``modules`` uninstalled, and the modules the
    process then held."""
    done = subprocess.run([sys.executable, str(SCRIPTS / "imported_modules.py"), "--without", modules, "--cli",
                           *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": "torch"})
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines and done.stdout.strip(), done.stderr[-3000:]
    return lines[-1], set(json.loads(done.stdout.splitlines()[-1]))


INPUTS = ["images", "model.keras", "model.onnx", "pred.gpkg", "scene.tif", "truth.tif"]


@pytest.fixture
def inputs(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 a zip signature, not a model")
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07 not a model")
    (tmp_path / "scene.tif").write_bytes(tiff_header(GEOKEYS, 33922, 33550))  # georeferenced; no pixels
    (tmp_path / "truth.tif").write_bytes(tiff_header(GEOKEYS))
    (tmp_path / "pred.gpkg").write_bytes(b"not a GeoPackage")
    (tmp_path / "images").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == INPUTS
    return tmp_path


def case(name: str, d):
    """(modules uninstalled, arguments, what the message says needs the module, the module, its extra)."""
    keras, onnx, tif = d / "model.keras", d / "model.onnx", d / "scene.tif"
    serve = ["serve", "--checkpoint", keras, "--port", free_port()]
    mapping = ["map", tif, "--checkpoint", keras, "--out", d / "job", "--engine", "local"]
    score = ["score-polygons", d / "pred.gpkg", d / "truth.tif"]
    return {
        "serve-fastapi": ("fastapi", serve, "buildings serve", "fastapi", "deploy"),
        "serve-uvicorn": ("uvicorn", serve, "buildings serve", "uvicorn", "deploy"),
        "serve-multipart": ("python_multipart", serve, "buildings serve", "python_multipart", "deploy"),
        "export-onnx": ("onnx", ["export", "--checkpoint", keras, "--out", d / "out.onnx"], "--format onnx", "onnx",
                        "deploy"),
        "predict-geotiff": ("rasterio", ["predict", "--checkpoint", keras, "--images", tif, "--save-masks", d / "m"],
                            f"{tif}: reading a GeoTIFF with its georeference", "rasterio", "deploy"),
        # rasterio reads ortho.tif's CRS (a real GeoTIFF, written by the test): predict checks the outputs next
        "predict-vectorize-pyogrio": ("pyogrio", ["predict", "--checkpoint", keras, "--images", d / "ortho.tif",
                                                  "--vectorize", d / "b.gpkg"], "--vectorize", "pyogrio", "deploy"),
        "predict-vectorize-shapely": ("shapely", ["predict", "--checkpoint", keras, "--images", d / "ortho.tif",
                                                  "--vectorize", d / "b.gpkg"], "--vectorize", "shapely", "deploy"),
        # an ensemble's .keras member is not loaded before its .onnx one is refused
        "predict-onnx": ("onnxruntime", ["predict", "--checkpoint", keras, "--checkpoint", onnx, "--images",
                                         d / "images", "--save-masks", d / "m"],
                         f"{onnx}: running an ONNX model", "onnxruntime", "deploy"),
        "map-rasterio": ("rasterio", mapping, "buildings map", "rasterio", "deploy"),
        "map-shapely": ("shapely", mapping, "buildings map", "shapely", "deploy"),
        "map-pyogrio": ("pyogrio", mapping, "buildings map", "pyogrio", "deploy"),
        "map-onnx": ("onnxruntime", ["map", tif, "--checkpoint", onnx, "--out", d / "job"],
                     f"{onnx}: running an ONNX model", "onnxruntime", "deploy"),
        "score-polygons-shapely": ("shapely", score, f"{d / 'pred.gpkg'}: reading it", "shapely", "deploy"),
        "score-polygons-pyogrio": ("pyogrio", score, f"{d / 'pred.gpkg'}: reading it", "pyogrio", "deploy"),
        # the truth's reader is looked for before the predictions are read
        "score-polygons-rasterio": ("rasterio", score, f"{d / 'truth.tif'}: reading it", "rasterio", "deploy"),
    }[name]


@pytest.mark.parametrize("name", [
    "serve-fastapi", "serve-uvicorn", "serve-multipart", "export-onnx", "predict-geotiff", "predict-vectorize-pyogrio",
    "predict-vectorize-shapely", "predict-onnx", "map-rasterio", "map-shapely", "map-pyogrio", "map-onnx",
    "score-polygons-shapely", "score-polygons-pyogrio", "score-polygons-rasterio"])
def test_a_missing_extra_is_one_line_naming_it_before_any_work(name, inputs):
    without, args, what, module, extra = case(name, inputs)
    expected = list(INPUTS)
    if name.startswith("predict-vectorize"):
        pytest.importorskip("rasterio")
        write_raster(inputs / "ortho.tif")
        expected = sorted(expected + ["ortho.tif"])
    assert extra_lists(extra, module), f"pyproject.toml's {extra} extra does not list {module}"
    line, imported = run_without(without, *args)
    assert line == f'Error: {what} needs {DISTRIBUTIONS.get(module, module)}: pip install -e ".[{extra}]"', line
    assert sorted(m for m in imported if m.split(".")[0] in FRAMEWORKS) == []  # no model built, no Keras
    if not name.startswith("predict-vectorize"):  # (there rasterio read the CRS, to tell a GeoTIFF)
        assert sorted(m for m in imported if m.split(".")[0] in READERS) == []  # no input opened
    assert sorted(p.name for p in inputs.iterdir()) == expected  # nothing written


def test_without_rasterio_a_tiff_without_geotiff_tags_is_still_an_image(inputs):
    """Only a GeoTIFF needs rasterio: a plain TIFF goes on to be predicted as an image, as far as
    the checkpoint check (here a file without a zip signature stops it)."""
    plain, bad = inputs / "plain.tif", inputs / "bad.keras"
    plain.write_bytes(tiff_header())
    bad.write_bytes(b"nope")
    line, _ = run_without("rasterio", "predict", "--checkpoint", bad, "--images", plain, "--save-masks", inputs / "m")
    assert line == f"Error: {bad}: not a Keras checkpoint (no zip signature: b'nope')", line
    line, _ = run_without("rasterio", "predict", "--checkpoint", bad, "--images", inputs / "scene.tif",
                          "--save-masks", inputs / "m")
    assert "needs rasterio" in line, line  # the same with GeoTIFF tags


def test_a_geoparquet_without_geopandas_says_what_to_install(inputs):
    """GeoParquet is read by geopandas and pyarrow (the map extra): the line says so, and how to
    install them, before the file is opened."""
    pred = inputs / "pred.parquet"
    pred.write_bytes(b"not read")
    line, _ = run_without("geopandas", "score-polygons", pred, inputs / "truth.tif")
    assert line == f'Error: {pred}: reading GeoParquet needs geopandas: pip install -e ".[map]"', line


def test_a_server_without_rasterio_refuses_a_geotiff_naming_the_extra(monkeypatch):
    """Without rasterio, ``serve`` would decode a GeoTIFF as a plain picture and answer without its
    georeference: it refuses it (501, the one line naming the extra), while a TIFF without GeoTIFF
    tags is not refused for the missing reader."""
    from buildings import serve

    monkeypatch.setitem(sys.modules, "rasterio", None)  # `import rasterio` raises ImportError
    with pytest.raises(serve.Refusal) as refused:
        serve._decode_upload(tiff_header(GEOKEYS, 33922, 33550), "scene.tif", serve.MAX_PIXELS)
    assert refused.value.status == 501
    assert refused.value.detail == 'scene.tif: a GeoTIFF (this server reads it with its georeference) needs rasterio: ' \
        'pip install -e ".[deploy]"'
    with pytest.raises(serve.Refusal) as plain:
        serve._decode_upload(tiff_header(), "plain.tif", serve.MAX_PIXELS)  # header only: not decodable
    assert "rasterio" not in plain.value.detail and plain.value.status == 400
