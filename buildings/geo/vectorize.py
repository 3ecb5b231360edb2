"""Building polygons from a mask that arrives block by block, one polygon per building.

Each block's buildings are labelled (``prediction.CONNECTIVITY``-connected, as ``rasterio.features.shapes`` traces them) and
traced into polygons in map coordinates; a building that crosses a block border is traced in pieces
whose labels meet along the border: the pieces are joined (union-find over the labels facing each
other across the border) and their polygons unioned at the end, so it comes out as one polygon
with its pixel count and mean probability summed over the pieces. Only the border rows/columns of
the blocks still to meet a neighbour are kept, so memory follows the number of buildings, not the
raster's size.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError, OutputError
from buildings.files import atomic_path, check_writable_folder
from buildings.inference.prediction import CONNECTIVITY

__all__ = ["BuildingPolygons", "write_polygons"]

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


@dataclass
class BuildingPolygons:
    """Collects mask blocks (:meth:`add_block`) and gives building features (:meth:`features`).

    ``transform``: the raster's affine transform; ``min_area``: buildings of fewer pixels are
    dropped; ``simplify``: Douglas-Peucker tolerance in pixels (0 keeps the pixel staircase)."""

    transform: object
    min_area: int = 0
    simplify: float = 1.0
    parent: dict = field(default_factory=dict)
    parts: dict = field(default_factory=lambda: defaultdict(list))
    pixels: dict = field(default_factory=lambda: defaultdict(int))
    prob_sum: dict = field(default_factory=lambda: defaultdict(float))
    right_edges: dict = field(default_factory=dict)
    bottom_edges: dict = field(default_factory=dict)
    next_id: int = 1

    def _root(self, i: int) -> int:
        while self.parent.get(i, i) != i:
            self.parent[i] = self.parent.get(self.parent[i], self.parent[i])
            i = self.parent[i]
        return i

    def _join(self, a: np.ndarray, b: np.ndarray) -> None:
        both = (a > 0) & (b > 0)
        for x, y in set(zip(a[both].tolist(), b[both].tolist())):
            rx, ry = self._root(x), self._root(y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)

    def add_block(self, block: tuple[int, int], row: int, col: int, mask: np.ndarray, probs: np.ndarray) -> None:
        """Add the mask block (uint8 {0,1}) at pixel (row, col), index ``block`` = (block row, block
        column) in a regular grid, with its probabilities; blocks come row by row."""
        from affine import Affine
        from rasterio.features import shapes
        from shapely.geometry import shape

        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=CONNECTIVITY, ltype=cv2.CV_32S)
        offset = self.next_id - 1
        self.next_id += max(count - 1, 0)
        ids = np.where(labels > 0, labels + offset, 0)
        if count > 1:
            flat = labels.ravel()
            pixels = np.bincount(flat, minlength=count)
            sums = np.bincount(flat, weights=probs.ravel().astype(np.float64), minlength=count)
            for k in range(1, count):
                self.pixels[k + offset] += int(pixels[k])
                self.prob_sum[k + offset] += float(sums[k])
            at = self.transform * Affine.translation(col, row)
            for geometry, value in shapes(labels, mask=labels > 0, connectivity=CONNECTIVITY, transform=at):
                self.parts[int(value) + offset].append(shape(geometry))
        i, j = block
        left = self.right_edges.pop((i, j - 1), None)
        if left is not None:
            self._join(left, ids[:, 0])
        top = self.bottom_edges.pop((i - 1, j), None)
        if top is not None:
            self._join(top, ids[0, :])
        self.right_edges[i, j] = ids[:, -1].copy()
        self.bottom_edges[i, j] = ids[-1, :].copy()

    def features(self) -> list[dict]:
        """One feature per building: ``geometry`` (shapely, map coordinates), ``pixels``,
        ``area`` (pixels × the pixel's area in CRS units²: what was detected, whatever the
        simplification of the outline), ``mean_probability``; buildings under ``min_area`` pixels
        dropped, outlines simplified."""
        from shapely.ops import unary_union

        groups: dict[int, list[int]] = defaultdict(list)
        for label in self.parts:
            groups[self._root(label)].append(label)
        pixel_size = abs(self.transform.a)
        pixel_area = abs(self.transform.a * self.transform.e - self.transform.b * self.transform.d)
        out = []
        for root in sorted(groups):
            labels = groups[root]
            pixels = sum(self.pixels[k] for k in labels)
            if pixels < self.min_area:
                continue
            pieces = [g for k in labels for g in self.parts[k]]
            geometry = pieces[0] if len(pieces) == 1 else unary_union(pieces)
            if self.simplify > 0:
                geometry = geometry.simplify(self.simplify * pixel_size, preserve_topology=True)
            out.append({"geometry": geometry, "pixels": pixels, "area": pixels * pixel_area,
                        "mean_probability": sum(self.prob_sum[k] for k in labels) / pixels})
        return out


EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG): a geographic CRS's degrees on the ground


def feature_properties(feature: dict, crs) -> dict:
    """A building's attributes, the one place they are named (``buildings predict --vectorize``
    writes them, ``buildings serve`` answers them): ``area_m2``, the detected pixels' area on the
    ground — not the simplified outline's —, for a raster with a CRS (a projected CRS's linear unit
    converted to metres; a geographic CRS's degrees on a sphere of :data:`EARTH_RADIUS_M` at the
    building's latitude, within 0.5 % of the ellipsoid); ``pixels``, which is the only area of an
    image without a CRS; ``mean_probability`` (4 decimals). One name, one unit: there is no area
    in other units under another name."""
    properties = {}
    if crs is not None and (crs.is_projected or crs.is_geographic):
        properties["area_m2"] = float(feature["area"] * _square_metres(feature, crs))
    return {**properties, "pixels": int(feature["pixels"]),
            "mean_probability": round(float(feature["mean_probability"]), 4)}


def _square_metres(feature: dict, crs) -> float:
    """Square metres in one square unit of ``crs`` where ``feature`` lies."""
    if crs.is_projected:
        return crs.linear_units_factor[1] ** 2
    radians = crs.units_factor[1]  # a degree (or grad) in radians
    latitude = feature["geometry"].centroid.y * radians if "geometry" in feature else 0.0
    return (radians * EARTH_RADIUS_M) ** 2 * math.cos(latitude)


def check_polygon_path(path) -> Path:
    """``path`` if polygons can be written there (a .gpkg / .geojson in a folder that can be
    created and written); checked before any prediction, so a typo costs nothing."""
    path = Path(path)
    if DRIVERS.get(path.suffix.lower()) is None:
        raise ConfigError(f"{path}: --vectorize writes .gpkg or .geojson files")
    check_writable_folder(path.parent, path)
    return path


def write_polygons(features: list[dict], path, crs) -> Path:
    """Write building features to a GeoPackage (.gpkg) or GeoJSON (.geojson) in ``crs``, atomically.
    Attributes: :func:`feature_properties`."""
    import shapely
    from pyogrio.raw import write

    path = Path(path)
    driver = DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ConfigError(f"{path}: --vectorize writes .gpkg or .geojson files")
    geometries = [f["geometry"] for f in features]
    kind = "MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geometries) else "Polygon"
    if kind == "MultiPolygon":
        geometries = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geometries]
    rows = [feature_properties(f, crs) for f in features]
    fields = list(feature_properties({"area": 0.0, "pixels": 0, "mean_probability": 0.0}, crs))  # the names only
    columns = [np.array([row[name] for row in rows], np.int64 if name == "pixels" else np.float64)
               for name in fields]
    with atomic_path(path, suffix=path.suffix) as temporary:
        temporary.unlink(missing_ok=True)  # GDAL creates the file itself
        try:
            write(str(temporary), shapely.to_wkb(np.array(geometries, dtype=object)), field_data=columns,
                  fields=fields, crs=crs.to_wkt() if crs is not None else None, geometry_type=kind,
                  driver=driver, layer="buildings")
        except Exception as err:  # pyogrio raises its own kinds (FeatureError, DataSourceError) for GDAL's errors
            if isinstance(err, OSError):
                raise
            raise OutputError(f"{path}: cannot write the polygons ({' '.join(str(err).split())[:200]})") from None
    return path
