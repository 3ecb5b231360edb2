"""``buildings map``: six GeoTIFFs in two CRSs through the local engine and Ray Data (2 CPUs), each
file's mask against ``buildings predict --images``, buildings across file edges and block seams
once each, a worker that dies mid-job, a corrupt input among good ones, resuming."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import brightness_model

SIDE = 160  # pixels of every file
PIXEL = 0.5  # metres
BLOCK = 64  # raster blocks: a 160-pixel file has 3 x 3
# file name -> (EPSG, grid column, grid row) of two 2-file-wide mosaics, one in UTM 33N, one in Web Mercator
FILES = {"utm_a": (32633, 0, 0), "utm_b": (32633, 1, 0), "utm_c": (32633, 0, 1), "utm_d": (32633, 1, 1),
         "merc_a": (3857, 0, 0), "merc_b": (3857, 1, 0)}
ORIGIN = {32633: (500_000.0, 5_000_000.0), 3857: (1_670_000.0, 5_700_000.0)}
# buildings in mosaic pixels (row0, col0, row1, col1), end-exclusive
MOSAIC_BUILDINGS = {
    32633: [(20, 140, 40, 185),   # across the edge of utm_a and utm_b (column 160)
            (50, 50, 80, 80),     # across block seams inside utm_a (row and column 64)
            (150, 30, 175, 50),   # across the edge of utm_a and utm_c (row 160)
            (150, 150, 172, 172),  # at the corner of all four files
            (100, 250, 120, 270)],  # inside utm_b
    3857: [(70, 150, 90, 170),     # across the edge of merc_a and merc_b
           (20, 20, 40, 40)],
}
EXPECTED_BUILDINGS = 7


def _mosaic(epsg: int) -> np.ndarray:
    rows = 2 * SIDE if epsg == 32633 else SIDE
    mask = np.zeros((rows, 2 * SIDE), np.uint8)
    for r0, c0, r1, c1 in MOSAIC_BUILDINGS[epsg]:
        mask[r0:r1, c0:c1] = 1
    return mask


def write_scene(folder: Path) -> dict[str, Path]:
    import rasterio
    from rasterio.transform import from_origin

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (epsg, gx, gy) in FILES.items():
        mask = _mosaic(epsg)[gy * SIDE:(gy + 1) * SIDE, gx * SIDE:(gx + 1) * SIDE]
        value = np.where(mask, 230, 30).astype(np.uint8)
        x0, y0 = ORIGIN[epsg]
        transform = from_origin(x0 + gx * SIDE * PIXEL, y0 - gy * SIDE * PIXEL, PIXEL, PIXEL)
        path = folder / f"{name}.tif"
        with rasterio.open(path, "w", driver="GTiff", height=SIDE, width=SIDE, count=3, dtype="uint8",
                           crs=f"EPSG:{epsg}", transform=transform) as out:
            out.write(np.stack([value, value, value]))
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("map")
    paths = write_scene(root / "tiles")
    return root, paths, brightness_model(root / "brightness.keras")


def _env(**extra):
    return {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": "", **extra}


def _run(*args, cwd, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "buildings", *args], cwd=cwd, env=env or _env(),
                          capture_output=True, text=True, timeout=timeout)


def _read(path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.read(1)


def _layer(path):
    import shapely
    from pyogrio.raw import read

    meta, _, geometry, fields = read(str(path), layer="buildings")
    names = list(meta["fields"])
    return meta, [shapely.from_wkb(g) for g in geometry], {n: fields[names.index(n)] for n in names}


def _check_job(out: Path, scene_paths, model, cwd, *, single_masks: dict):
    from rasterio.crs import CRS
    from rio_cogeo.cogeo import cog_validate

    for name in scene_paths:
        mask = out / "masks" / f"{name}.tif"
        valid, errors, _ = cog_validate(str(mask))
        assert valid, (name, errors)
        np.testing.assert_array_equal(_read(mask), single_masks[name])  # bit for bit: the single-raster path's
    meta, geometries, fields = _layer(out / "buildings.gpkg")
    assert CRS.from_user_input(meta["crs"]) == CRS.from_epsg(3857)
    assert len(geometries) == EXPECTED_BUILDINGS
    sources = sorted(fields["source"].tolist())
    assert "utm_a;utm_b;utm_c;utm_d" in sources  # the corner building: one feature from four files
    assert sources.count("utm_a;utm_b") == 1 and sources.count("utm_a;utm_c") == 1
    assert sources.count("merc_a;merc_b") == 1
    expected_areas = sorted((r1 - r0) * (c1 - c0) * PIXEL ** 2 for boxes in MOSAIC_BUILDINGS.values()
                            for r0, c0, r1, c1 in boxes)
    assert sorted(np.round(fields["area_m2"], 6).tolist()) == pytest.approx(expected_areas)
    for geometry in geometries:  # reprojected: Web Mercator metres, not UTM or degrees
        assert geometry.geom_type == "Polygon" and geometry.is_valid
        assert 1_600_000 < geometry.centroid.x < 1_700_000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["buildings"] == EXPECTED_BUILDINGS and summary["committed"] == 6
    assert summary["km2"] == pytest.approx(6 * (SIDE * PIXEL) ** 2 / 1e6)
    assert (out / "quicklook.png").stat().st_size > 0
    for name in scene_paths:  # every window exactly once
        windows = json.loads((out / "state" / f"{name}.json").read_text())["windows"]
        assert sorted(map(tuple, windows)) == [(i, j) for i in range(3) for j in range(3)], name
    return summary


@pytest.fixture(scope="module")
def single_masks(scene):
    """Each file through the single-raster path: ``buildings predict --images`` for the first, and
    the function it calls (``geo.predict.predict_raster``) in this process for the others (six
    command-line runs would cost six Keras start-ups)."""
    from buildings.geo.predict import predict_raster
    from buildings.inference import Predictor

    root, paths, model = scene
    first, *others = paths
    done = _run("predict", "--checkpoint", str(model), "--images", str(paths[first]), "--save-masks",
                str(root / "single"), "--block", str(BLOCK), cwd=root)
    assert done.returncode == 0, done.stderr[-2000:]
    predictor = Predictor.from_checkpoints([model])
    for name in [first, *others]:
        predict_raster(predictor, paths[name], mask_out=root / "library" / f"{name}.tif", block=BLOCK)
    masks = {name: _read(root / "library" / f"{name}.tif") for name in paths}
    np.testing.assert_array_equal(_read(root / "single" / f"{first}.tif"), masks[first])
    assert sum(int(m.sum()) for m in masks.values()) == sum(int(_mosaic(e).sum()) for e in (32633, 3857))
    return masks


@pytest.mark.slow
def test_local_engine_masks_equal_predict_and_the_layer_joins_file_edges(scene, single_masks):
    root, paths, model = scene
    out = root / "local"
    done = _run("map", str(root / "tiles"), "--checkpoint", str(model), "--out", str(out), "--engine", "local",
                "--block", str(BLOCK), "--crs", "EPSG:3857", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _check_job(out, paths, model, root, single_masks=single_masks)
    assert 0 < summary["first_window_seconds"] <= summary["predict_seconds"]
    again = _run("map", str(root / "tiles"), "--checkpoint", str(model), "--out", str(out), "--engine", "local",
                 "--block", str(BLOCK), "--crs", "EPSG:3857", cwd=root)
    assert again.returncode == 0 and "6 file(s) already committed" in again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["windows"] == 0 and summary["first_window_seconds"] is None  # nothing predicted again


@pytest.mark.slow
def test_ray_engine_with_a_worker_killed_and_a_corrupt_input(scene, single_masks):
    pytest.importorskip("ray")
    root, paths, model = scene
    tiles = root / "tiles-with-corrupt"
    tiles.mkdir()
    for path in paths.values():
        (tiles / path.name).write_bytes(path.read_bytes())
    (tiles / "broken.tif").write_bytes(b"II*\x00" + os.urandom(2000))  # a TIFF signature, then noise
    out = root / "ray"
    marker = root / "fault-happened"
    env = _env(BUILDINGS_MAP_FAULT=f"{marker}:utm_b:1:1", RAY_DEDUP_LOGS="0")
    done = _run("map", str(tiles), "--checkpoint", str(model), "--out", str(out), "--engine", "ray",
                "--actors", "2", "--block", str(BLOCK), "--crs", "EPSG:3857", "--save-probabilities", cwd=root, env=env)
    assert marker.exists()  # a worker did exit mid-job
    assert done.returncode == 1, done.stderr[-3000:]  # one input failed: said, and the exit status says so
    lines = [line for line in done.stderr.splitlines() if "broken.tif" in line]
    assert lines and all(line.count("\n") == 0 for line in lines)
    assert lines[0].startswith("skipped ") and "not a readable GeoTIFF" in lines[0]
    summary = _check_job(out, paths, model, root, single_masks=single_masks)
    assert list(summary["failed"]) == [str(tiles / "broken.tif")]
    from rio_cogeo.cogeo import cog_validate

    for name in paths:  # --save-probabilities: probability x 255, a COG on the mask's grid
        probabilities = out / "probabilities" / f"{name}.tif"
        assert cog_validate(str(probabilities))[0]
        np.testing.assert_array_equal(_read(probabilities) >= 128, single_masks[name].astype(bool))


@pytest.mark.slow
def test_the_merged_layer_regularised_and_filtered_in_square_metres(scene, tmp_path):
    """merge_parts on the local job's committed parts (the job ran in the test above or runs here)."""
    from rasterio.crs import CRS

    from buildings.mapping.merge import PartFile, merge_parts

    root, paths, model = scene
    out = root / "local"
    if not (out / "summary.json").exists():
        done = _run("map", str(root / "tiles"), "--checkpoint", str(model), "--out", str(out), "--engine", "local",
                    "--block", str(BLOCK), "--crs", "EPSG:3857", cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
    parts = []
    for name in paths:
        state = json.loads((out / "state" / f"{name}.json").read_text())
        parts.append(PartFile(name, out / "parts" / f"{name}.gpkg", state["crs_wkt"], tuple(state["bounds"]),
                              state["pixel_size"]))
    target = CRS.from_epsg(3857)
    plain = merge_parts(parts, target)
    squared = merge_parts(parts, target, regularize=True)
    assert len(squared.geometries) == len(plain.geometries) == EXPECTED_BUILDINGS
    for geometry in squared.geometries:  # rectangles, squared: 4 corners (5 with the closing point)
        assert len(geometry.exterior.coords) == 5, geometry.wkt
    areas = [(r1 - r0) * (c1 - c0) * PIXEL ** 2 for boxes in MOSAIC_BUILDINGS.values() for r0, c0, r1, c1 in boxes]
    floor = min(areas) + 1
    filtered = merge_parts(parts, target, min_area_m2=floor)
    assert 0 < len(filtered.geometries) == sum(a >= floor for a in areas) < EXPECTED_BUILDINGS
    assert min(filtered.columns["area_m2"]) >= floor
