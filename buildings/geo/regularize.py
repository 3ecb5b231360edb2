"""Building footprints with right angles: the outlines traced from a mask, regularised for a map.

Methods (:data:`METHODS`), chosen by ``experiments/regularize_compare.py`` (real Barnarp footprints,
degraded as a segmentation model degrades them, scored with :mod:`buildings.geo.polygon_metrics`):

* ``orthogonal`` (written here): each building's dominant orientation is the length-weighted
  circular mean of its edges' directions modulo 90° (``θ = atan2(Σ l·sin 4α, Σ l·cos 4α) / 4``);
  in that frame the Douglas-Peucker-simplified rings are snapped edge by edge to horizontal or
  vertical, runs of edges of one kind become one line at their length-weighted mean position, steps
  shorter than :data:`MIN_STEP_PX` pixels are merged away, and consecutive lines meet at right
  angles. Holes are snapped in the building's frame. The default. Why written by hand: it is a
  few NumPy lines per ring, and on the evaluation (degraded masks) it beat the library below on
  every measure: matched IoU 0.939 against 0.928, PoLiS 0.391 m against 0.393 m, 8.8 vertices per
  building against 36, every corner square against 78 %, and 6-8x faster (0.8-1.6 s against
  6-10 s per 1000 buildings on one core); on clean outlines the library moves them less (PoLiS
  0.261 m against 0.288 m) with more vertices and some 45° corners.
* ``rectangle``: the minimum rotated rectangle (shapely) for a building that fills at least
  :data:`RECTANGULARITY` of it, ``orthogonal`` otherwise.
* ``buildingregulariser``: the ``buildingregulariser`` package (``regularize_geodataframe``, one
  core; edges aligned to the main direction or at 45° to it, near-circles made circles), its
  tolerances scaled to the pixel.

Whatever the method, the output has the input's order and length, and a building the method
breaks (invalid or empty output, a hole lost, or an outline of IoU under :data:`MIN_IOU` with the
input) comes back as it went in, as does invalid or non-polygonal input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from buildings.errors import ConfigError

__all__ = ["METHODS", "MIN_IOU", "regularize_footprints", "simplify_footprints"]

METHODS = ("orthogonal", "rectangle", "buildingregulariser")
SIMPLIFY_PX = 2.0  # Douglas-Peucker tolerance before snapping, in pixels: the staircase and a model's wobble
MIN_STEP_PX = 2.0  # snapped steps shorter than this (pixels) are noise and merged into their neighbours
RECTANGULARITY = 0.9  # ``rectangle``: area / minimum-rotated-rectangle area from which a building is that rectangle
MIN_IOU = 0.5  # a regularised building of lower IoU with its input is a broken one: the input is kept
BR_SIMPLIFY_PX = 1.5  # buildingregulariser's simplify_tolerance in pixels (its default 0.5 m ~ 1.7 px at 0.3 m)
BR_PARALLEL_PX = 3.0  # its parallel_threshold in pixels (default 1 m ~ 3.3 px at 0.3 m)


def simplify_footprints(geometries: list, tolerance_m: float) -> list:
    """Douglas-Peucker simplification of each footprint with ``tolerance_m`` in the coordinates' unit
    (metres in a metric CRS), topology kept (valid in, valid out; holes kept unless smaller than
    the tolerance); same order."""
    import shapely

    if not tolerance_m >= 0:
        raise ConfigError(f"simplify tolerance {tolerance_m}: give a distance >= 0")
    return list(shapely.simplify(np.asarray(geometries, dtype=object), tolerance_m, preserve_topology=True))


def regularize_footprints(geometries: list, *, pixel_size: float, method: str = "orthogonal") -> list:
    """Right-angled footprints (shapely polygons / multipolygons in, the same out, same order, holes
    kept), ``pixel_size`` the mask's pixel in the coordinates' unit (tolerances are set in pixels).
    A building the method cannot regularise is returned unchanged (see the module's docstring)."""
    import shapely

    if method not in METHODS:
        raise ConfigError(f"regularisation method {method!r}: choose one of {', '.join(METHODS)}")
    if not (isinstance(pixel_size, (int, float)) and math.isfinite(pixel_size) and pixel_size > 0):
        raise ConfigError(f"pixel size {pixel_size!r}: give the mask's pixel side in map units, > 0")
    source = np.empty(len(geometries), dtype=object)
    source[:] = list(geometries)
    usable = (~shapely.is_missing(source)) & np.isin(shapely.get_type_id(source), (3, 6))
    usable[usable] = shapely.is_valid(source[usable]) & ~shapely.is_empty(source[usable]) & \
        (shapely.area(source[usable]) > 0)
    out = source.copy()
    todo = np.flatnonzero(usable)
    if method == "buildingregulariser":
        candidates = _buildingregulariser(source[todo], pixel_size)
    else:
        candidates = [_per_part(g, pixel_size, method) for g in source[todo]]
    out[todo] = _checked(source[todo], candidates)
    return list(out)


def _checked(inputs: np.ndarray, candidates: list) -> np.ndarray:
    """``candidates`` where they are sound (valid, polygonal, non-empty, as many holes as the input,
    IoU >= MIN_IOU with it), the input elsewhere."""
    import shapely

    result = np.empty(len(candidates), dtype=object)
    result[:] = candidates
    ok = ~shapely.is_missing(result)
    ok[ok] = np.isin(shapely.get_type_id(result[ok]), (3, 6))
    ok[ok] = shapely.is_valid(result[ok]) & ~shapely.is_empty(result[ok])
    ok[ok] = _holes(result[ok]) == _holes(inputs[ok])
    if ok.any():
        inter = shapely.area(shapely.intersection(result[ok], inputs[ok]))
        union = shapely.area(result[ok]) + shapely.area(inputs[ok]) - inter
        ok[ok] = inter >= MIN_IOU * union
    return np.where(ok, result, inputs)


def _holes(geoms: np.ndarray) -> np.ndarray:
    import shapely

    parts, owner = shapely.get_parts(geoms, return_index=True)
    return np.bincount(owner, weights=shapely.get_num_interior_rings(parts), minlength=len(geoms)).astype(int)


def _per_part(geometry, pixel_size: float, method: str):
    import shapely

    parts = [_regularize_polygon(p, pixel_size, method) for p in shapely.get_parts(geometry)]
    if any(p is None for p in parts):
        return None
    return parts[0] if geometry.geom_type == "Polygon" else shapely.MultiPolygon(parts)


def _regularize_polygon(polygon, pixel_size: float, method: str):
    """One polygon regularised, or None where the method gives nothing usable."""
    import shapely

    if method == "rectangle" and not polygon.interiors:
        rectangle = shapely.oriented_envelope(polygon)
        if rectangle.geom_type == "Polygon" and polygon.area >= RECTANGULARITY * rectangle.area:
            return rectangle
    simple = polygon.simplify(SIMPLIFY_PX * pixel_size, preserve_topology=True)
    if simple.geom_type != "Polygon" or simple.is_empty:
        return None
    rings = [np.asarray(simple.exterior.coords)] + [np.asarray(r.coords) for r in simple.interiors]
    theta = _dominant_angle(rings[0])
    centre = rings[0][:-1].mean(axis=0)
    cos, sin = math.cos(theta), math.sin(theta)
    to_frame = np.array([[cos, sin], [-sin, cos]])  # rotation by -theta (row vectors times its transpose)
    snapped = []
    for ring in rings:
        square = _snap_ring((ring - centre) @ to_frame.T, MIN_STEP_PX * pixel_size)
        if square is None:
            return None
        snapped.append(square @ to_frame + centre)
    return shapely.Polygon(snapped[0], snapped[1:])


def _dominant_angle(ring: np.ndarray) -> float:
    """The ring's orientation modulo 90°: the length-weighted circular mean of 4 × edge direction, / 4."""
    d = np.diff(ring, axis=0)
    length = np.hypot(d[:, 0], d[:, 1])
    angle = np.arctan2(d[:, 1], d[:, 0])
    return 0.25 * math.atan2(float((length * np.sin(4 * angle)).sum()), float((length * np.cos(4 * angle)).sum()))


def _snap_ring(xy: np.ndarray, min_step: float) -> np.ndarray | None:
    """A closed ring in its building's frame snapped to horizontal / vertical lines (None: fewer than 4)."""
    points = xy[:-1]
    d = np.roll(points, -1, axis=0) - points
    horizontal = np.abs(d[:, 0]) >= np.abs(d[:, 1])
    change = np.flatnonzero(horizontal != np.roll(horizontal, 1))
    if len(change) < 4:
        return None
    order = np.roll(np.arange(len(points)), -int(change[0]))  # start at a change of kind
    kinds, positions, weights = [], [], []
    middle = points + 0.5 * d
    for k in order.tolist():
        h = bool(horizontal[k])
        length = float(abs(d[k, 0]) if h else abs(d[k, 1]))
        position = float(middle[k, 1] if h else middle[k, 0])
        if kinds and kinds[-1] == h:
            positions[-1] = (positions[-1] * weights[-1] + position * length) / max(weights[-1] + length, 1e-12)
            weights[-1] += length
        else:
            kinds.append(h)
            positions.append(position)
            weights.append(length)
    # kinds alternate and their count is even; drop steps shorter than min_step, merging their neighbours
    while len(kinds) > 4:
        steps = [abs(positions[(g + 1) % len(kinds)] - positions[g - 1]) for g in range(len(kinds))]
        g = int(np.argmin(steps))
        if steps[g] >= min_step:
            break
        before, after = (g - 1) % len(kinds), (g + 1) % len(kinds)
        total = weights[before] + weights[after]
        positions[before] = (positions[before] * weights[before] + positions[after] * weights[after]) / max(total,
                                                                                                            1e-12)
        weights[before] = total
        for index in sorted((g, after), reverse=True):
            del kinds[index], positions[index], weights[index]
    n = len(kinds)
    corners = []
    for g in range(n):
        here, there = positions[g], positions[(g + 1) % n]
        corners.append((there, here) if kinds[g] else (here, there))  # H (y = here) meets V (x = there)
    corners.append(corners[0])
    return np.asarray(corners, dtype=float)


def _buildingregulariser(geoms: np.ndarray, pixel_size: float) -> list:
    """``buildingregulariser.regularize_geodataframe`` on one core; the parts it splits a building
    into are put back together by a position column (it keeps attributes, drops what it empties)."""
    try:
        import geopandas
        from buildingregulariser import regularize_geodataframe
    except ImportError as err:
        raise ConfigError(f"regularisation method 'buildingregulariser' needs {err.name}: "
                          "pip install buildingregulariser") from None
    import shapely

    if not len(geoms):
        return []
    frame = geopandas.GeoDataFrame({"position": np.arange(len(geoms))}, geometry=list(geoms))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its per-polygon warnings: those buildings are checked and kept as input
        done = regularize_geodataframe(frame, parallel_threshold=BR_PARALLEL_PX * pixel_size,
                                       simplify_tolerance=BR_SIMPLIFY_PX * pixel_size, num_cores=1)
    out: list = [None] * len(geoms)
    for position, group in done.groupby("position"):
        parts = [p for g in group.geometry for p in shapely.get_parts(g) if p.geom_type == "Polygon"]
        if parts:
            out[int(position)] = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    return out
