"""Building polygons scored against truth: SpaceNet F1, matched IoU, PoLiS, vertices per building.

Every expected value is worked out here from the geometry of hand-made squares (a square shifted by
d along x overlaps its original on (s - d) x s, their union is (s + d) x s; which vertices lie on
the other square's boundary and how far the others are), not read back from the code under test.
"""

import json
import math

import numpy as np
import pytest

shapely = pytest.importorskip("shapely", reason="the [deploy] extra (shapely, pyogrio, rasterio) is not installed")
pyogrio = pytest.importorskip("pyogrio", reason="the [deploy] extra is not installed")
rasterio = pytest.importorskip("rasterio", reason="the [deploy] extra is not installed")

from click.testing import CliRunner  # noqa: E402
from shapely.affinity import translate  # noqa: E402
from shapely.geometry import LineString, box  # noqa: E402

from buildings.cli import main  # noqa: E402
from buildings.errors import BuildingsError  # noqa: E402
from buildings.geo.polygon_metrics import (  # noqa: E402
    polis,
    read_footprints,
    score_footprint_files,
    score_polygons,
    vertex_counts,
)

UTM = "EPSG:32633"


def write_vector(path, geoms, crs=UTM, kind="Polygon"):
    from pyogrio.raw import write

    driver = {".gpkg": "GPKG", ".geojson": "GeoJSON"}[path.suffix]
    write(str(path), shapely.to_wkb(np.array(geoms, dtype=object)), field_data=[], fields=[], crs=crs,
          geometry_type=kind, driver=driver)
    return path


def write_mask(path, mask, transform=None, crs=None):
    import warnings

    profile = {"driver": "GTiff" if path.suffix == ".tif" else "PNG", "height": mask.shape[0],
               "width": mask.shape[1], "count": 1, "dtype": "uint8"}
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a PNG mask: pixel coordinates
        with rasterio.open(path, "w", **profile) as out:
            out.write(mask, 1)
    return path


def test_a_shifted_square_has_the_iou_and_polis_its_geometry_gives():
    s, d = 10.0, 2.0
    score = score_polygons([box(d, 0, s + d, s)], [box(0, 0, s, s)])
    assert score.matched == 1 and score.f1 == 1.0
    assert score.mean_iou == pytest.approx((s - d) * s / ((s + d) * s))
    # Two corners of each square lie on the other's boundary, the other two are d away from it:
    # each half of PoLiS is (0 + 0 + d + d) / (2 * 4), the sum d / 2.
    assert score.polis == pytest.approx(d / 2)


def test_polis_measures_to_the_nearest_boundary_point_not_the_nearest_vertex():
    s, e = 10.0, 1.0
    inner, outer = box(0, 0, s, s), box(-e, -e, s + e, s + e)
    # inner corners are e from the outer square's sides; outer corners are e*sqrt(2) from the inner corner
    assert polis([inner], [outer])[0] == pytest.approx(0.5 * e + 0.5 * e * math.sqrt(2))
    assert polis([inner], [inner])[0] == 0.0


def test_the_iou_threshold_is_inclusive():
    pred, truth = [box(0, 0, 2, 1)], [box(0, 0, 1, 1)]  # IoU exactly 1/2
    assert score_polygons(pred, truth, iou=0.5).matched == 1
    assert score_polygons(pred, truth, iou=0.5 + 1e-9).matched == 0
    assert score_polygons(pred, truth, iou=0.4).matched == 1


def test_unmatched_buildings_on_both_sides_count_as_false_positives_and_negatives():
    truth = [box(0, 0, 10, 10), box(100, 0, 110, 10), box(200, 0, 210, 10)]
    pred = [box(1, 0, 11, 10), box(500, 500, 510, 510)]  # one hit, one building where there is none
    score = score_polygons(pred, truth)
    precision, recall = 1 / 2, 1 / 3
    assert (score.n_pred, score.n_truth, score.matched) == (2, 3, 1)
    assert score.precision == pytest.approx(precision) and score.recall == pytest.approx(recall)
    assert score.f1 == pytest.approx(2 * precision * recall / (precision + recall))


@pytest.mark.parametrize("reverse", [False, True])
def test_two_predictions_over_one_truth_match_once_and_the_better_one_wins(reverse):
    truth = [box(0, 0, 10, 10)]
    pred = [box(0, 0, 10, 9), box(0, 0, 10, 10)]  # IoU 0.9 and 1: both above the threshold
    score = score_polygons(pred[::-1] if reverse else pred, truth)
    assert score.matched == 1 and score.precision == 0.5 and score.recall == 1.0
    assert score.mean_iou == 1.0 and score.polis == 0.0


def test_vertices_per_building_count_every_ring_once():
    holed = box(0, 0, 10, 10).difference(box(3, 3, 6, 6))
    assert vertex_counts([box(0, 0, 1, 1), holed]).tolist() == [4, 8]
    assert score_polygons([box(0, 0, 1, 1), holed], [box(0, 0, 1, 1)]).vertices_pred == 6.0


def test_nothing_predicted_and_nothing_to_find():
    assert score_polygons([], [box(0, 0, 1, 1)]).recall == 0.0
    nothing = score_polygons([], [])
    assert (nothing.precision, nothing.recall, nothing.f1) == (1.0, 1.0, 1.0)
    assert nothing.as_dict()["polis"] is None  # NaN is no JSON


def test_predictions_in_another_crs_are_reprojected_into_the_truth_crs(tmp_path):
    from pyproj import Transformer

    squares = [box(500_000 + 30 * i, 6_400_000, 500_010 + 30 * i, 6_400_010) for i in range(3)]
    to_degrees = Transformer.from_crs(UTM, "EPSG:4326", always_xy=True)
    in_degrees = [shapely.transform(g, lambda xy: np.column_stack(to_degrees.transform(xy[:, 0], xy[:, 1])))
                  for g in squares]
    truth = write_vector(tmp_path / "truth.gpkg", squares)
    pred = write_vector(tmp_path / "pred.geojson", in_degrees, crs="EPSG:4326")
    score = score_footprint_files(pred, truth)
    assert score.matched == 3 and score.mean_iou > 0.999
    assert score.polis < 0.01 and score.units == "metre"  # in the truth's metres, not degrees
    assert score_polygons(in_degrees, squares).matched == 0  # compared unprojected, nothing would match


def test_geoparquet_footprints_score_like_the_same_geopackage(tmp_path):
    """GeoParquet (geopandas + pyarrow, the map extra) reads the same buildings and CRS as a
    GeoPackage of the same squares: the same scores against a truth in the same CRS."""
    geopandas = pytest.importorskip("geopandas", reason="the [map] extra (geopandas, pyarrow) is not installed")
    pytest.importorskip("pyarrow", reason="the [map] extra is not installed")
    squares = [box(500_000 + 30 * i, 6_400_000, 500_010 + 30 * i, 6_400_010) for i in range(3)]
    shifted = [translate(g, 2, 0) for g in squares[:2]]  # 2 of 3 found, IoU 8/12 each
    truth = write_vector(tmp_path / "truth.gpkg", squares)
    geopandas.GeoDataFrame(geometry=shifted, crs=UTM).to_parquet(tmp_path / "pred.parquet")
    as_parquet = score_footprint_files(tmp_path / "pred.parquet", truth)
    as_gpkg = score_footprint_files(write_vector(tmp_path / "pred.gpkg", shifted), truth)
    assert as_parquet.as_dict() == as_gpkg.as_dict()
    assert as_parquet.n_pred == 2 and as_parquet.matched == 2 and as_parquet.mean_iou == pytest.approx(8 / 12)


def test_a_geotiff_mask_is_traced_into_buildings_at_their_map_position(tmp_path):
    from affine import Affine

    transform = Affine(0.5, 0, 400_000, 0, -0.5, 6_500_000)
    mask = np.zeros((40, 60), np.uint8)
    rectangles = [(5, 10, 15, 30), (20, 40, 35, 55)]  # rows 5..15, columns 10..30, ...
    for r0, c0, r1, c1 in rectangles:
        mask[r0:r1, c0:c1] = 1
    truth = [box(*(transform * (c0, r1)), *(transform * (c1, r0))) for r0, c0, r1, c1 in rectangles]
    tif = write_mask(tmp_path / "mask.tif", mask, transform, UTM)
    geoms, crs = read_footprints(tif)
    assert len(geoms) == 2 and crs.to_epsg() == 32633
    score = score_footprint_files(tif, write_vector(tmp_path / "truth.gpkg", truth))
    assert score.matched == 2 and score.mean_iou == pytest.approx(1.0) and score.polis == pytest.approx(0.0)


def test_png_masks_are_scored_in_pixels(tmp_path):
    truth, pred = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    truth[4:14, 4:14] = 255
    pred[4:14, 6:16] = 255  # the same 10 px square, 2 px to the right
    score = score_footprint_files(write_mask(tmp_path / "pred.png", pred), write_mask(tmp_path / "truth.png", truth))
    assert score.matched == 1 and score.mean_iou == pytest.approx(8 / 12) and score.polis == pytest.approx(1.0)
    assert score.units == "coordinate units"


def test_a_mask_without_crs_against_a_map_is_refused(tmp_path):
    mask = np.zeros((8, 8), np.uint8)
    mask[2:5, 2:5] = 1
    png = write_mask(tmp_path / "pred.png", mask)
    with pytest.raises(BuildingsError, match="pred.png has no CRS"):
        score_footprint_files(png, write_vector(tmp_path / "truth.gpkg", [box(0, 0, 1, 1)]))


def test_bad_inputs_name_the_file(tmp_path):
    lines = write_vector(tmp_path / "lines.gpkg", [LineString([(0, 0), (1, 1)])], kind="LineString")
    with pytest.raises(BuildingsError, match=r"lines.gpkg: building footprints are polygons; feature 0"):
        read_footprints(lines)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(BuildingsError, match=r"notes.txt: .*\.txt is neither"):
        read_footprints(tmp_path / "notes.txt")
    rgb = tmp_path / "photo.tif"
    with rasterio.open(rgb, "w", driver="GTiff", height=4, width=4, count=3, dtype="uint8") as out:
        out.write(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(BuildingsError, match="photo.tif: a mask has one band"):
        read_footprints(rgb)


def test_invalid_polygons_read_from_a_file_are_repaired(tmp_path):
    bowtie = shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    assert not bowtie.is_valid
    geoms, _ = read_footprints(write_vector(tmp_path / "bowtie.gpkg", [bowtie, box(5, 5, 6, 6)]))
    assert len(geoms) == 2 and all(g.is_valid for g in geoms)
    assert geoms[0].area == pytest.approx(2.0)  # the two triangles of the bow-tie, 1 each


def test_cli_prints_the_scores_and_json(tmp_path):
    truth = write_vector(tmp_path / "truth.gpkg", [box(0, 0, 10, 10), box(100, 0, 110, 10)])
    pred = write_vector(tmp_path / "pred.gpkg", [box(2, 0, 12, 10)])
    result = CliRunner().invoke(main, ["score-polygons", str(pred), str(truth), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert (scores["matched"], scores["precision"], scores["recall"]) == (1, 1.0, 0.5)
    assert scores["polis"] == pytest.approx(1.0) and scores["units"] == "metre"
    strict = CliRunner().invoke(main, ["score-polygons", str(pred), str(truth), "--iou", "0.7"])
    assert strict.exit_code == 0 and "matched 0 (IoU >= 0.7)" in strict.output  # 8/12 < 0.7
    assert "PoLiS, matched        n/a" in strict.output


def test_cli_names_a_bad_file_on_one_line(tmp_path):
    bad = tmp_path / "pred.gpkg"
    bad.write_bytes(b"not a geopackage")
    truth = write_vector(tmp_path / "truth.gpkg", [box(0, 0, 1, 1)])
    result = CliRunner().invoke(main, ["score-polygons", str(bad), str(truth)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: cannot read the footprints (")
    result = CliRunner().invoke(main, ["score-polygons", str(truth), str(truth), "--iou", "0"])
    assert result.exit_code == 2 and "--iou" in result.output
