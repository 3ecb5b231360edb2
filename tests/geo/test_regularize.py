"""Footprint regularisation: right angles out of noisy outlines, holes kept, order kept, and a
building the method cannot handle returned as it came."""

import importlib.util
import math

import numpy as np
import pytest

shapely = pytest.importorskip("shapely", reason="the [deploy] extra (shapely) is not installed")

from shapely import affinity  # noqa: E402
from shapely.geometry import LineString, MultiPolygon, Polygon, box  # noqa: E402

from buildings.errors import ConfigError  # noqa: E402
from buildings.geo import regularize  # noqa: E402
from buildings.geo.regularize import METHODS, regularize_footprints, simplify_footprints  # noqa: E402

PIXEL = 0.3
HAVE_LIBRARY = all(importlib.util.find_spec(name) for name in ("buildingregulariser", "geopandas"))
METHODS_HERE = [m for m in METHODS if HAVE_LIBRARY or m != "buildingregulariser"]


def noisy_rectangle(width, height, angle, *, step=0.3, noise=0.15, seed=0, origin=(0.0, 0.0)):
    """A ``width`` x ``height`` rectangle rotated by ``angle`` degrees, its outline sampled every
    ``step`` and each vertex moved across its edge by Gaussian noise of ``noise``: a traced mask's
    wobbly outline."""
    rng = np.random.default_rng(seed)
    corners = [(0, 0), (width, 0), (width, height), (0, height), (0, 0)]
    points = []
    for (x0, y0), (x1, y1) in zip(corners[:-1], corners[1:], strict=True):
        length = math.hypot(x1 - x0, y1 - y0)
        n = max(int(length / step), 1)
        t = np.arange(n) / n
        shift = rng.normal(0, noise, n)
        shift[0] = 0  # the corner stays put: neighbouring edges cannot cross
        normal = ((y1 - y0) / length, -(x1 - x0) / length)
        points += list(zip(x0 + t * (x1 - x0) + shift * normal[0], y0 + t * (y1 - y0) + shift * normal[1], strict=True))
    polygon = affinity.translate(affinity.rotate(Polygon(points), angle, origin=(0, 0)), *origin)
    assert polygon.is_valid
    return polygon


def corner_angles(ring) -> np.ndarray:
    """Interior turn of each corner of a ring, degrees."""
    xy = np.asarray(ring.coords)[:-1]
    a = np.roll(xy, -1, axis=0) - xy
    b = np.roll(a, -1, axis=0)
    return np.degrees(np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(axis=1))))


# buildingregulariser left out: on this outline it cuts one corner at 45° (allow_45_degree), five corners
@pytest.mark.parametrize("method", ["orthogonal", "rectangle"])
def test_a_noisy_rectangle_becomes_a_rectangle_with_right_angles(method):
    angle = 30.0
    noisy = noisy_rectangle(12, 6, angle)
    assert shapely.get_num_coordinates(noisy) > 100 and noisy.is_valid
    (out,) = regularize_footprints([noisy], pixel_size=PIXEL, method=method)
    assert shapely.get_num_coordinates(out) - 1 == 4  # four corners
    assert np.abs(corner_angles(out.exterior) - 90).max() < 1.0
    x, y = np.asarray(out.exterior.coords)[:2].T
    direction = math.degrees(math.atan2(y[1] - y[0], x[1] - x[0])) % 90
    assert min(abs(direction - angle % 90), 90 - abs(direction - angle % 90)) < 2.0  # the building's orientation
    truth = affinity.rotate(box(0, 0, 12, 6), angle, origin=(0, 0))
    assert out.intersection(truth).area / out.union(truth).area > 0.95


def test_orthogonal_keeps_a_step_of_an_l_shaped_building():
    ell = box(0, 0, 12, 4).union(box(0, 4, 4, 10))  # an L: six right-angled corners
    outline = np.asarray(shapely.segmentize(ell, 0.3).exterior.coords)[:-1]
    noisy = Polygon(outline + np.random.default_rng(1).normal(0, 0.1, outline.shape))
    assert noisy.is_valid and shapely.get_num_coordinates(noisy) > 100
    (out,) = regularize_footprints([noisy], pixel_size=PIXEL, method="orthogonal")
    assert shapely.get_num_coordinates(out) - 1 == 6
    assert np.abs(corner_angles(out.exterior) - 90).max() < 1.0
    assert out.symmetric_difference(ell).area < 0.05 * ell.area


@pytest.mark.parametrize("method", METHODS_HERE)
def test_holes_are_kept(method):
    outer = noisy_rectangle(20, 14, 10, seed=2)
    hole = noisy_rectangle(6, 4, 10, seed=3, origin=(4.0, 5.0))
    courtyard = outer.difference(hole)
    assert len(courtyard.interiors) == 1
    (out,) = regularize_footprints([courtyard], pixel_size=PIXEL, method=method)
    assert out.is_valid and len(out.interiors) == 1
    regular_hole = Polygon(out.interiors[0])
    assert regular_hole.area == pytest.approx(24, rel=0.2) and regular_hole.intersects(hole.centroid)
    if method != "buildingregulariser":  # it may give a hole 45° corners
        assert shapely.get_num_coordinates(out.interiors[0]) - 1 == 4


@pytest.mark.parametrize("method", METHODS_HERE)
def test_invalid_and_degenerate_input_comes_back_unchanged(method):
    bowtie = Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])
    triangle = Polygon([(0, 0), (10, 0), (0, 8)])  # nothing to square: fewer than four sides
    flat = Polygon([(0, 0), (5, 0), (10, 0)])
    inputs = [bowtie, Polygon(), LineString([(0, 0), (1, 1)]), flat, None, triangle]
    assert not bowtie.is_valid
    out = regularize_footprints(inputs, pixel_size=PIXEL, method=method)
    assert len(out) == len(inputs)
    for before, after in zip(inputs[:5], out[:5], strict=True):
        assert after is before
    # the triangle: whatever a method makes of it (orthogonal: nothing, four sides are needed) is sound
    assert out[5].is_valid and out[5].intersection(triangle).area / out[5].union(triangle).area >= regularize.MIN_IOU


def test_a_building_the_method_breaks_falls_back_to_the_input(monkeypatch):
    house = noisy_rectangle(10, 8, 0, seed=4)
    monkeypatch.setattr(regularize, "_regularize_polygon",
                        lambda polygon, pixel_size, method: Polygon([(0, 0), (9, 9), (9, 0), (0, 9)]))
    (out,) = regularize_footprints([house], pixel_size=PIXEL, method="orthogonal")
    assert out is house  # the bow-tie it made is never returned
    monkeypatch.setattr(regularize, "_regularize_polygon",
                        lambda polygon, pixel_size, method: box(100, 100, 110, 108))  # valid, but elsewhere
    (out,) = regularize_footprints([house], pixel_size=PIXEL, method="orthogonal")
    assert out is house
    courtyard = box(0, 0, 20, 20).difference(box(5, 5, 10, 10))
    monkeypatch.setattr(regularize, "_regularize_polygon", lambda polygon, pixel_size, method: box(0, 0, 20, 20))
    (out,) = regularize_footprints([courtyard], pixel_size=PIXEL, method="orthogonal")
    assert out is courtyard  # a lost hole is a broken building


@pytest.mark.parametrize("method", METHODS_HERE)
def test_order_is_kept(method):
    rng = np.random.default_rng(5)
    centres = rng.permutation(np.arange(8)) * 40.0
    inputs = [noisy_rectangle(10 + i, 6, 15 * i, seed=i, origin=(c, -c)) for i, c in enumerate(centres)]
    inputs.insert(3, MultiPolygon([noisy_rectangle(8, 5, 0, seed=9, origin=(1000, 0)),
                                   noisy_rectangle(8, 5, 0, seed=10, origin=(1020, 0))]))
    out = regularize_footprints(inputs, pixel_size=PIXEL, method=method)
    assert len(out) == len(inputs)
    for before, after in zip(inputs, out, strict=True):
        assert after is not before and after.is_valid
        assert after.centroid.distance(before.centroid) < 0.5
    assert out[3].geom_type == "MultiPolygon" and len(out[3].geoms) == 2


def test_bad_options_name_the_value():
    with pytest.raises(ConfigError, match="'square'.*choose one of orthogonal"):
        regularize_footprints([], pixel_size=PIXEL, method="square")
    with pytest.raises(ConfigError, match="pixel size 0"):
        regularize_footprints([], pixel_size=0)
    with pytest.raises(ConfigError, match="-1"):
        simplify_footprints([], -1)


def test_simplify_reduces_vertices_and_keeps_order_and_validity():
    inputs = [noisy_rectangle(10, 6, 20, seed=i, origin=(50.0 * i, 0)) for i in range(3)]
    out = simplify_footprints(inputs, 0.5)
    assert len(out) == 3 and all(g.is_valid for g in out)
    assert all(shapely.get_num_coordinates(a) < shapely.get_num_coordinates(b) / 5 for a, b in zip(out, inputs, strict=True))
    assert all(a.centroid.distance(b.centroid) < 0.5 for a, b in zip(out, inputs, strict=True))
