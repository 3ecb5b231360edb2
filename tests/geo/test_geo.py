"""GeoTIFF in, georeferenced mask and building polygons out.

The model here is a 1x1 convolution that calls a pixel a building when its brightness is above one
half, so the truth is known exactly: bright rectangles drawn at known pixel positions of a raster
with a known CRS (UTM 33N) and transform (0.5 m pixels). The mask must come back at those pixels
with the raster's CRS and transform, and each rectangle as one polygon at the map coordinates the
transform gives, also the rectangles that cross the borders of the blocks the raster is streamed in.
"""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import (
    CRS,
    RECTANGLES,
    ROOT,
    TRANSFORM,
    brightness_model,
    truth_mask,
    write_raster,
)

from buildings.errors import ConfigError
from buildings.inference import MaskRule, Postprocess, Predictor

rasterio = pytest.importorskip("rasterio", reason="the [deploy] extra (rasterio, shapely, pyogrio) is not installed")
pytest.importorskip("pyogrio", reason="the [deploy] extra is not installed")

from buildings.geo.predict import predict_raster  # noqa: E402


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    checkpoint = brightness_model(tmp_path_factory.mktemp("model") / "brightness.keras")
    return Predictor.from_checkpoints([checkpoint], tile=64, overlap=16, batch_size=8)


def read_polygons(path):
    from pyogrio.raw import read
    from shapely import from_wkb

    meta, _, geometry, fields = read(str(path))
    columns = {name: values for name, values in zip(meta["fields"], fields, strict=True)}
    return meta, [from_wkb(g) for g in geometry], columns


def test_geotiff_mask_keeps_crs_and_transform_and_polygons_land_on_the_map(tmp_path, predictor):
    source = write_raster(tmp_path / "ortho.tif")
    predictor = dataclasses.replace(predictor, rule=MaskRule(postprocess=Postprocess(min_area=20)))
    report = predict_raster(predictor, source, mask_out=tmp_path / "mask.tif",
                            vectorize_out=tmp_path / "buildings.gpkg", simplify=0, block=128, halo=32)
    with rasterio.open(tmp_path / "mask.tif") as mask_file:
        assert mask_file.crs.to_string() == CRS
        assert mask_file.transform == TRANSFORM
        assert mask_file.profile["tiled"] and mask_file.profile["compress"] == "deflate"
        mask = mask_file.read(1)
    # The 16-pixel rectangle lies inside one block and is dropped by min-area; the rest is exact.
    assert np.array_equal(mask, truth_mask(small=False))
    meta, polygons, columns = read_polygons(tmp_path / "buildings.gpkg")
    assert rasterio.crs.CRS.from_user_input(meta["crs"]) == rasterio.crs.CRS.from_string(CRS)
    assert report.polygons == len(polygons) == len(RECTANGLES)  # a building crossing blocks is one polygon
    expected = sorted((TRANSFORM * (c0, r1))[0:2] + (TRANSFORM * (c1, r0))[0:2] for r0, c0, r1, c1 in RECTANGLES)
    got = sorted(tuple(round(v, 6) for v in p.bounds) for p in polygons)  # (minx, miny, maxx, maxy) in metres
    assert got == sorted(tuple(round(v, 6) for v in e) for e in expected)
    assert all(p.geom_type == "Polygon" and len(p.interiors) == 0 for p in polygons)
    sizes = sorted((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in RECTANGLES)
    assert sorted(columns["pixels"].tolist()) == sizes
    assert sorted(columns["area_m2"].tolist()) == pytest.approx([s * 0.25 for s in sizes])
    assert np.all(columns["mean_probability"] > 0.99)


def test_polygon_areas_are_the_detected_pixels_whatever_the_simplification():
    import cv2

    from buildings.geo.vectorize import BuildingPolygons, feature_properties

    mask = np.zeros((64, 64), np.uint8)
    mask[2, 2] = 1  # 1 pixel
    mask[10, 10:12] = 1  # 2 pixels
    cv2.circle(mask, (40, 40), 4, 1, -1)  # a disc
    disc = int(mask[30:50, 30:50].sum())
    polygons = BuildingPolygons(TRANSFORM, simplify=1.0)  # the default simplification
    polygons.add_block((0, 0), 0, 0, mask, mask.astype(np.float32))
    areas = sorted(feature_properties(f, rasterio.crs.CRS.from_string(CRS))["area_m2"] for f in polygons.features())
    assert areas == pytest.approx([1 * 0.25, 2 * 0.25, disc * 0.25])  # 0.5 m pixels
    simplified = sorted(f["geometry"].area for f in polygons.features())
    assert simplified != pytest.approx(areas)  # the outlines alone would have said otherwise


def test_the_area_has_one_name_in_square_metres_for_any_crs_and_none_without_one(tmp_path):
    # A projected CRS's metres, a geographic CRS's degrees on the ground, and no CRS: the polygons
    # carry area_m2 in the first two and no area in any other name or unit in the third.
    from affine import Affine

    from buildings.geo.vectorize import BuildingPolygons, write_polygons

    mask = np.zeros((40, 40), np.uint8)
    mask[5:15, 5:25] = 1  # 200 pixels
    wgs84 = rasterio.crs.CRS.from_epsg(4326)
    # 1e-5 degree pixels at 45 N: 1.1113 m north-south and 0.7885 m east-west on the WGS84 ellipsoid
    # (111,132 m and 78,847 m a degree there), 0.8762 m² a pixel.
    geographic = Affine(1e-5, 0, 10.0, 0, -1e-5, 45.0002)
    cases = [(TRANSFORM, rasterio.crs.CRS.from_string(CRS), 200 * 0.25), (geographic, wgs84, 200 * 0.8762),
             (Affine.identity(), None, None)]
    for transform, crs, expected in cases:
        polygons = BuildingPolygons(transform, simplify=0)
        polygons.add_block((0, 0), 0, 0, mask, mask.astype(np.float32))
        path = write_polygons(polygons.features(), tmp_path / f"{expected}.gpkg", crs)
        _, _, columns = read_polygons(path)
        assert columns["pixels"].tolist() == [200]
        if expected is None:
            assert set(columns) == {"pixels", "mean_probability"}, set(columns)
        else:
            assert set(columns) == {"area_m2", "pixels", "mean_probability"}, set(columns)
            assert columns["area_m2"][0] == pytest.approx(expected, rel=5e-3)


def test_holes_are_kept_in_polygons(tmp_path, predictor):
    source = tmp_path / "ring.tif"
    image = np.full((3, 96, 96), 30, np.uint8)
    image[:, 20:70, 20:70] = 230
    image[:, 35:50, 35:50] = 30  # a courtyard
    with rasterio.open(source, "w", driver="GTiff", height=96, width=96, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as out:
        out.write(image)
    predict_raster(predictor, source, vectorize_out=tmp_path / "ring.geojson", simplify=0, block=64, halo=16)
    _, polygons, columns = read_polygons(tmp_path / "ring.geojson")
    assert len(polygons) == 1 and len(polygons[0].interiors) == 1
    assert polygons[0].area == pytest.approx((50 * 50 - 15 * 15) * 0.25)
    assert columns["pixels"].tolist() == [50 * 50 - 15 * 15]


def test_sixteen_bit_rasters_are_scaled_and_bands_are_chosen(tmp_path, predictor):
    lines = []
    wide = write_raster(tmp_path / "wide.tif", dtype="uint16", scale=100, bands_first=4000)  # NIR, R, G, B
    predict_raster(predictor, wide, bands=(2, 3, 4), mask_out=tmp_path / "wide-mask.tif", block=256, log=lines.append)
    with rasterio.open(tmp_path / "wide-mask.tif") as out:
        assert np.array_equal(out.read(1), truth_mask())
    assert any("percentiles" in line and "band 2" in line for line in lines)
    with pytest.raises(ConfigError, match="has 4 band"):
        predict_raster(predictor, wide, bands=(2, 3, 5), mask_out=tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_cli_predicts_a_geotiff_into_a_mask_and_geojson(tmp_path, predictor):
    checkpoint = brightness_model(tmp_path / "brightness.keras")
    source = write_raster(tmp_path / "town.tif")
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    done = subprocess.run([sys.executable, "-m", "buildings.cli", "predict", "--checkpoint", str(checkpoint),
                           "--images", str(source), "--tile", "64", "--overlap", "16", "--save-masks",
                           str(tmp_path / "masks"), "--vectorize", str(tmp_path / "town.geojson"), "--min-area", "20"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 building polygons" in done.stdout
    with rasterio.open(tmp_path / "masks" / "town.tif") as out:
        assert out.crs.to_string() == CRS and np.array_equal(out.read(1), truth_mask(small=False))
    geojson = json.loads((tmp_path / "town.geojson").read_text())
    assert len(geojson["features"]) == 4 and "32633" in json.dumps(geojson.get("crs", {}))
    bad = subprocess.run([sys.executable, "-m", "buildings.cli", "predict", "--checkpoint", str(checkpoint),
                          "--images", str(source), "--out", str(tmp_path / "x.csv")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--save-masks (a GeoTIFF mask) and --vectorize" in bad.stderr
    assert not (tmp_path / "x.csv").exists()
