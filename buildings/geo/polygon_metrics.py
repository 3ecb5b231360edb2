"""Building polygons scored against truth polygons: the quality of a map, next to Dice.

* **per-building precision / recall / F1** at an IoU threshold (0.5 by default): the SpaceNet
  building metric (Van Etten, Lindenbaum & Bacastow 2018, "SpaceNet: A Remote Sensing Dataset and
  Challenge Series", arXiv:1807.01232, §4; the algorithm as P. Hagerty's "The SpaceNet Metric",
  The DownLinQ, 2016, and SpaceNet's ``spacenetutilities`` evaluation give it): a prediction and a
  truth building are a true positive when their IoU (area of the intersection over area of the
  union) is at least the threshold; matching is one-to-one and greedy, the pairs taken by IoU
  descending, so a truth building (or a prediction) counts once however many polygons cover it.
  At the 0.5 threshold, with the polygons of each side not overlapping one another, a polygon has
  at most one partner above the threshold and the greedy order changes nothing; below 0.5, or with
  overlapping predictions, the IoU-descending order makes the result independent of file order.
  With no prediction precision is 0, with no truth recall is 0; with neither, all three are 1
  (nothing to find, nothing found, as the mask scores count two empty masks as agreeing).
* **mean IoU** of the matched pairs.
* **PoLiS** (Avbelj, Müller & Bamler 2015, "A metric for polygon comparison and building extraction
  evaluation", IEEE Geoscience and Remote Sensing Letters 12(1), 170-174, eq. 1): for polygons A
  with vertices a_1..a_q and B with vertices b_1..b_r,
  ``p(A, B) = 1/(2q) Σ_j d(a_j, ∂B) + 1/(2r) Σ_k d(b_k, ∂A)``, d the Euclidean distance from a
  vertex to the nearest point of the other polygon's boundary (not its nearest vertex); averaged
  over the matched pairs, in the map units of the coordinates (metres in a metric CRS). The paper
  defines it for simple polygons; here a ring's vertices are those of every ring (holes included,
  the closing vertex once) and ∂ is the whole boundary.
* **vertices per building**, mean, of the predictions and of the truth (every ring, closing vertex
  once): how heavy the outlines are.

:func:`read_footprints` reads either side from a vector file (pyogrio; GeoParquet through
geopandas) or from a mask (GeoTIFF or PNG, read by rasterio, traced into one polygon per building
by :class:`~buildings.geo.vectorize.BuildingPolygons`, the one home of masks → polygons);
:func:`score_footprint_files` reads both, reprojects the predictions into the truth's CRS, and
scores them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from buildings.errors import ConfigError, DataError, require

__all__ = ["MASK_SUFFIXES", "VECTOR_SUFFIXES", "PolygonScore", "polis", "read_footprints", "score_footprint_files",
           "score_polygons", "vertex_counts"]

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".geoparquet")
MASK_SUFFIXES = (".tif", ".tiff", ".png")
MASK_BLOCK = 2048  # a mask raster is traced in blocks of this many pixels a side (BuildingPolygons joins them)


@dataclass(frozen=True)
class PolygonScore:
    """Per-building scores of predictions against truth (see the module's docstring for the
    definitions). ``mean_iou`` and ``polis`` are NaN when nothing matched; ``units``: what
    ``polis`` is measured in."""

    iou_threshold: float
    n_pred: int
    n_truth: int
    matched: int
    precision: float
    recall: float
    f1: float
    mean_iou: float
    polis: float
    vertices_pred: float
    vertices_truth: float
    units: str = "map units"

    def as_dict(self) -> dict:
        """JSON-ready: NaN (nothing matched, or no building) becomes ``None``."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in asdict(self).items()}


def _polygonal(geoms) -> np.ndarray:
    return np.asarray(list(geoms) if not isinstance(geoms, np.ndarray) else geoms, dtype=object).reshape(-1)


def vertex_counts(geoms) -> np.ndarray:
    """Vertices of each polygon: every ring's (exterior and holes), the closing vertex counted once."""
    import shapely

    geoms = _polygonal(geoms)
    parts, owner = shapely.get_parts(geoms, return_index=True)
    rings = np.bincount(owner, weights=shapely.get_num_interior_rings(parts) + 1, minlength=len(geoms))
    return shapely.get_num_coordinates(geoms) - rings.astype(np.int64)


def _vertices(geoms) -> tuple[np.ndarray, np.ndarray]:
    """The vertices of each geometry as (points, index of their geometry), closing vertices left out."""
    import shapely

    parts, owner = shapely.get_parts(geoms, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    closing = np.r_[ring_of[1:] != ring_of[:-1], True] if len(ring_of) else np.zeros(0, bool)
    return shapely.points(coords[~closing]), owner[ring_part[ring_of[~closing]]]


def polis(a, b) -> np.ndarray:
    """PoLiS distance (Avbelj et al. 2015, eq. 1) of each pair ``a[i]``, ``b[i]``, in coordinate units:
    half the mean distance of A's vertices to B's boundary plus half the mean of B's to A's."""
    import shapely

    a, b = _polygonal(a), _polygonal(b)
    if len(a) != len(b):
        raise ValueError(f"polis: {len(a)} polygons against {len(b)}")
    halves = []
    for one, other in ((a, b), (b, a)):
        points, owner = _vertices(one)
        distance = shapely.distance(points, shapely.boundary(other)[owner])
        halves.append(np.bincount(owner, weights=distance, minlength=len(a))
                      / np.maximum(np.bincount(owner, minlength=len(a)), 1))
    return 0.5 * (halves[0] + halves[1])


def _match(pred: np.ndarray, truth: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one pairs (pred index, truth index, IoU) of IoU >= threshold, greedy by IoU descending."""
    import shapely

    if not len(pred) or not len(truth):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    tree = shapely.STRtree(truth)
    p, t = tree.query(pred, predicate="intersects")
    inter = shapely.area(shapely.intersection(pred[p], truth[t]))
    union = shapely.area(pred[p]) + shapely.area(truth[t]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    keep = iou >= threshold
    p, t, iou = p[keep], t[keep], iou[keep]
    order = np.argsort(-iou, kind="stable")
    # Greedy assignment by hand: a loop over the candidate pairs above the threshold (a handful per
    # building); scipy's linear_sum_assignment would give the maximum-weight matching, which is not
    # the SpaceNet rule.
    pred_used, truth_used, chosen = set(), set(), []
    for k in order.tolist():
        if p[k] not in pred_used and t[k] not in truth_used:
            pred_used.add(p[k])
            truth_used.add(t[k])
            chosen.append(k)
    chosen = np.asarray(chosen, np.int64)
    return p[chosen], t[chosen], iou[chosen]


def score_polygons(pred_geoms, truth_geoms, iou: float = 0.5) -> PolygonScore:
    """Score building polygons ``pred_geoms`` against ``truth_geoms`` (shapely polygons or
    multipolygons, one a building, in the same coordinates): SpaceNet precision / recall / F1 at IoU
    >= ``iou``, mean IoU and mean PoLiS of the matched pairs, vertices per building (definitions and
    references: the module's docstring)."""
    if not 0 < iou <= 1:
        raise ConfigError(f"--iou {iou}: the IoU threshold is in (0, 1]")
    pred, truth = _polygonal(pred_geoms), _polygonal(truth_geoms)
    p, t, ious = _match(pred, truth, iou)
    matched = len(p)
    if not len(pred) and not len(truth):
        precision = recall = f1 = 1.0
    else:
        precision = matched / len(pred) if len(pred) else 0.0
        recall = matched / len(truth) if len(truth) else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    nan = float("nan")
    return PolygonScore(
        iou_threshold=float(iou), n_pred=len(pred), n_truth=len(truth), matched=matched,
        precision=precision, recall=recall, f1=f1,
        mean_iou=float(ious.mean()) if matched else nan,
        polis=float(polis(pred[p], truth[t]).mean()) if matched else nan,
        vertices_pred=float(vertex_counts(pred).mean()) if len(pred) else nan,
        vertices_truth=float(vertex_counts(truth).mean()) if len(truth) else nan)


def read_footprints(path) -> tuple[list, object]:
    """Building footprints of a file as (shapely polygons, ``pyproj.CRS`` or None).

    A vector file (.gpkg, .geojson, .shp, .fgb through pyogrio, first layer; .parquet GeoParquet
    through geopandas): one feature a building; features without geometry are left out; invalid
    polygons are repaired (``shapely.make_valid``, polygonal parts kept); any other geometry type is
    refused. A mask (.tif/.tiff GeoTIFF, or .png, read by rasterio with its georeference, a PNG's
    world file included, else pixel coordinates): one band, non-zero = building, traced by
    :class:`~buildings.geo.vectorize.BuildingPolygons` with its defaults (4-connected, holes kept,
    1-pixel simplification), block by block."""
    path = Path(path)
    _check_reader(path)
    if path.suffix.lower() in MASK_SUFFIXES:
        return _read_mask(path)
    return _read_vector(path)


_PARQUET_SUFFIXES = (".parquet", ".geoparquet")


def _check_reader(path: Path) -> None:
    """A kind of file footprints are read from, with what reads it installed: one line naming the
    module and how to install it otherwise, before any file is read."""
    suffix = path.suffix.lower()
    if suffix not in MASK_SUFFIXES + VECTOR_SUFFIXES:
        raise ConfigError(f"{path}: building footprints are read from vector files ({', '.join(VECTOR_SUFFIXES)}) "
                          f"or masks ({', '.join(MASK_SUFFIXES)}); {suffix or 'no suffix'} is neither")
    readers = ("rasterio",) if suffix in MASK_SUFFIXES else () if suffix in _PARQUET_SUFFIXES else ("pyogrio",)
    require(f"{path}: reading it", "deploy", "shapely", "pyproj", *readers)
    if suffix in _PARQUET_SUFFIXES:  # the GDAL inside pyogrio's wheels has no Parquet driver: geopandas + pyarrow
        require(f"{path}: reading GeoParquet", "map", "geopandas", "pyarrow")


def _crs(value):
    if value is None:
        return None
    from pyproj import CRS

    return CRS.from_user_input(value)


def _read_vector(path: Path) -> tuple[list, object]:
    import shapely

    parquet = path.suffix.lower() in _PARQUET_SUFFIXES
    if parquet:  # installed: _check_reader
        import geopandas
    else:
        from pyogrio.raw import read
    try:
        if parquet:
            frame = geopandas.read_parquet(path)
            geoms, crs = np.asarray(frame.geometry.values, dtype=object), frame.crs
        else:
            meta, _, wkb, _ = read(str(path), read_geometry=True, columns=[])
            geoms, crs = (None if wkb is None else shapely.from_wkb(wkb)), meta["crs"]
    except Exception as err:  # pyogrio and pyarrow raise their own kinds (RuntimeError, ArrowInvalid, ...)
        reason = " ".join(str(err).split()).replace(f"'{path}' ", "").replace(f"{path}: ", "")
        raise DataError(f"{path}: cannot read the footprints ({reason[:200]})") from None
    if geoms is None:
        raise DataError(f"{path}: the layer has no geometry column")
    keep = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    geoms = geoms[keep]
    kinds = shapely.get_type_id(geoms)
    bad = np.flatnonzero(~np.isin(kinds, (3, 6)))  # Polygon, MultiPolygon
    if len(bad):
        raise DataError(f"{path}: building footprints are polygons; feature {int(np.flatnonzero(keep)[bad[0]])} "
                        f"(counted from 0) is a {geoms[bad[0]].geom_type}")
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms[invalid] = [_polygon_part(g) for g in shapely.make_valid(geoms[invalid])]
        geoms = geoms[~shapely.is_empty(geoms)]
    return list(geoms), _crs(crs)


def _polygon_part(geometry):
    """The polygonal part of a repaired geometry (a collection may hold lines left from a bow-tie)."""
    import shapely

    if geometry.geom_type in ("Polygon", "MultiPolygon"):
        return geometry
    polygons = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polygons) if polygons else shapely.Polygon()


def _read_mask(path: Path) -> tuple[list, object]:
    import warnings

    from buildings.geo.raster import _rasterio, gdal_reason
    from buildings.geo.vectorize import BuildingPolygons

    rasterio = _rasterio()
    from rasterio.windows import Window

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)  # a PNG: pixel coordinates
            with rasterio.open(path) as dataset:
                if dataset.count != 1:
                    raise DataError(f"{path}: a mask has one band (non-zero = building), this has {dataset.count}")
                polygons = BuildingPolygons(transform=dataset.transform)
                for i, row in enumerate(range(0, dataset.height, MASK_BLOCK)):
                    for j, col in enumerate(range(0, dataset.width, MASK_BLOCK)):
                        window = Window(col, row, min(MASK_BLOCK, dataset.width - col),
                                        min(MASK_BLOCK, dataset.height - row))
                        mask = (dataset.read(1, window=window) != 0).astype(np.uint8)
                        polygons.add_block((i, j), row, col, mask, mask)
                crs = dataset.crs
    except rasterio.errors.RasterioError as err:
        raise DataError(f"{path}: cannot read the mask ({gdal_reason(err)})") from None
    return [f["geometry"] for f in polygons.features()], _crs(crs.to_wkt() if crs is not None else None)


def _reproject(geoms: list, source, target) -> list:
    import shapely
    from pyproj import Transformer

    transformer = Transformer.from_crs(source, target, always_xy=True)
    return list(shapely.transform(np.asarray(geoms, dtype=object),
                                  lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))))


def score_footprint_files(pred_path, truth_path, iou: float = 0.5) -> PolygonScore:
    """:func:`score_polygons` of the footprints of two files (:func:`read_footprints`), the
    predictions reprojected into the truth's CRS when the two differ; PoLiS in the truth CRS's unit.
    One side with a CRS and the other without (a PNG mask in pixels against a map) is refused."""
    for path in (pred_path, truth_path):  # both readers there before either file is read
        _check_reader(Path(path))
    pred, pred_crs = read_footprints(pred_path)
    truth, truth_crs = read_footprints(truth_path)
    if (pred_crs is None) != (truth_crs is None):
        without, other = (pred_path, truth_path) if pred_crs is None else (truth_path, pred_path)
        raise ConfigError(f"{without} has no CRS and {other} has one: the two cannot be compared "
                          "(give the mask a georeference, e.g. a GeoTIFF or a world file)")
    if pred_crs is not None and pred_crs != truth_crs and pred:
        pred = _reproject(pred, pred_crs, truth_crs)
    score = score_polygons(pred, truth, iou=iou)
    units = "coordinate units"  # no CRS: pixels for a mask, whatever the file's coordinates are otherwise
    if truth_crs is not None:
        axes = truth_crs.axis_info
        units = axes[0].unit_name if axes else "map units"

    return replace(score, units=units)
