"""One building layer from the per-file polygons of a mapping job.

Each committed file left its buildings in ``parts/<stem>.gpkg`` (its own CRS; a building across a
window seam is already one polygon: ``geo.vectorize.BuildingPolygons``). :func:`merge_parts`
reprojects them to the target CRS (GDAL's, through ``rasterio.warp.transform_geom``) and joins the
buildings cut by a **file edge**: candidates are the polygons within half a pixel of their file's
border; two candidates of different files closer than half a pixel of the coarser file (in the
target CRS; adjacent files in one CRS touch exactly, reprojected ones leave slivers) are one
building (union-find over an STRtree's pairs), its outline the union of the pieces closed by that
tolerance, its pixels and area summed and its mean probability weighted by pixels, ``source`` every
file it came from. Then, in that order: regularisation (optional), simplification in metres, and
the minimum area in m².

Rasters are assumed to tile the region without overlapping; buildings in an overlap of two rasters
are joined too, but their area is then counted twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildings.errors import OutputError
from buildings.files import atomic_path

__all__ = ["MergedLayer", "PartFile", "merge_parts", "write_layer"]

FIELDS = ("area_m2", "pixels", "mean_probability", "source")


@dataclass(frozen=True)
class PartFile:
    stem: str
    path: Path  # parts/<stem>.gpkg
    crs_wkt: str
    bounds: tuple[float, float, float, float]  # left, bottom, right, top in the file's CRS
    pixel_size: float  # in the file's CRS units


@dataclass
class MergedLayer:
    geometries: list
    columns: dict  # FIELDS -> values
    joined_across_files: int  # buildings made of pieces from more than one file


def _read_part(part: PartFile):
    import shapely
    from pyogrio.raw import read

    meta, _, geometry, fields = read(str(part.path), layer="buildings")
    names = list(meta["fields"])
    values = {name: fields[names.index(name)] for name in names}
    return [shapely.from_wkb(g) for g in geometry], values


def _reproject(geometries, source_wkt: str, target):
    if not geometries:
        return []
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom
    from shapely.geometry import mapping, shape

    source = CRS.from_wkt(source_wkt)
    if source == target:
        return list(geometries)
    return [shape(g) for g in transform_geom(source, target, [mapping(g) for g in geometries])]


def _pixel_in_target(part: PartFile, target) -> float:
    """A pixel's side in the target CRS's units, near the file's centre."""
    from rasterio.crs import CRS
    from rasterio.warp import transform

    left, bottom, right, top = part.bounds
    x, y = (left + right) / 2, (bottom + top) / 2
    xs, ys = transform(CRS.from_wkt(part.crs_wkt), target, [x, x + part.pixel_size], [y, y])
    return math.hypot(xs[1] - xs[0], ys[1] - ys[0])


def _near_edge(geometry, part: PartFile) -> bool:
    left, bottom, right, top = part.bounds
    minx, miny, maxx, maxy = geometry.bounds
    tolerance = 0.5 * part.pixel_size
    return (minx - left < tolerance or right - maxx < tolerance or miny - bottom < tolerance
            or top - maxy < tolerance)


def merge_parts(parts: list[PartFile], target, *, regularize: bool = False, simplify_m: float = 0.0,
                min_area_m2: float = 0.0) -> MergedLayer:
    """The job's building layer in CRS ``target`` (a ``rasterio.crs.CRS``), as the module docstring says."""
    from shapely import STRtree
    from shapely.ops import unary_union

    geometries, pixels, area, prob_sum, sources, files, edge = [], [], [], [], [], [], []
    tolerance = 0.0
    for number, part in enumerate(parts):
        shapes, values = _read_part(part)
        if not shapes:
            continue
        near = [_near_edge(g, part) for g in shapes]
        geometries += _reproject(shapes, part.crs_wkt, target)
        pixels += [int(v) for v in values["pixels"]]
        area += [float(v) for v in values["area_m2"]]
        prob_sum += [float(p) * int(n) for p, n in zip(values["mean_probability"], values["pixels"])]
        sources += [part.stem] * len(shapes)
        files += [number] * len(shapes)
        edge += near
        tolerance = max(tolerance, 0.5 * _pixel_in_target(part, target))
    parent = list(range(len(geometries)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    candidates = [i for i, e in enumerate(edge) if e]
    if candidates:
        tree = STRtree([geometries[i] for i in candidates])
        left, right = tree.query([geometries[i] for i in candidates], predicate="dwithin", distance=tolerance)
        for a, b in zip(left.tolist(), right.tolist()):
            i, j = candidates[a], candidates[b]
            if files[i] != files[j]:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(geometries)):
        groups.setdefault(root(i), []).append(i)
    out_geometries, columns = [], {name: [] for name in FIELDS}
    joined = 0
    for members in groups.values():
        if len(members) == 1:
            geometry = geometries[members[0]]
        else:
            joined += 1
            pieces = [geometries[i].buffer(tolerance, join_style="mitre") for i in members]
            geometry = unary_union(pieces).buffer(-tolerance, join_style="mitre")
        n = sum(pixels[i] for i in members)
        out_geometries.append(geometry)
        columns["area_m2"].append(sum(area[i] for i in members))
        columns["pixels"].append(n)
        columns["mean_probability"].append(round(sum(prob_sum[i] for i in members) / max(n, 1), 4))
        columns["source"].append(";".join(sorted({sources[i] for i in members})))
    if regularize and out_geometries:
        from buildings.geo.regularize import regularize_footprints

        out_geometries = regularize_footprints(out_geometries, pixel_size=2 * tolerance if tolerance else 1.0)
    if simplify_m > 0 and out_geometries:
        step = simplify_m / _metres_per_unit(target, out_geometries[0])
        out_geometries = [g.simplify(step, preserve_topology=True) for g in out_geometries]
    keep = [k for k, a in enumerate(columns["area_m2"]) if a >= min_area_m2 and not out_geometries[k].is_empty]
    return MergedLayer([out_geometries[k] for k in keep], {name: [v[k] for k in keep] for name, v in columns.items()},
                       joined)


def _metres_per_unit(crs, geometry) -> float:
    if crs.is_projected:
        return crs.linear_units_factor[1]
    from buildings.geo.vectorize import EARTH_RADIUS_M

    return math.radians(1) * EARTH_RADIUS_M * max(math.cos(math.radians(geometry.centroid.y)), 1e-6)


def write_layer(layer: MergedLayer, path, crs, *, driver: str = "GPKG") -> Path:
    """Write the merged layer (``FIELDS`` as attributes) atomically; MultiPolygon when any is."""
    import shapely
    from pyogrio.raw import write

    path = Path(path)
    geometries = list(layer.geometries)
    kind = "MultiPolygon" if any(g.geom_type == "MultiPolygon" for g in geometries) else "Polygon"
    if kind == "MultiPolygon":
        geometries = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geometries]
    types = {"area_m2": np.float64, "pixels": np.int64, "mean_probability": np.float64, "source": object}
    columns = [np.array(layer.columns[name], dtype=types[name]) for name in FIELDS]
    with atomic_path(path, suffix=path.suffix) as temporary:
        temporary.unlink(missing_ok=True)  # GDAL creates the file itself
        try:
            write(str(temporary), shapely.to_wkb(np.array(geometries, dtype=object)), field_data=columns,
                  fields=list(FIELDS), crs=crs.to_wkt(), geometry_type=kind, driver=driver, layer="buildings")
        except Exception as err:  # pyogrio's own kinds for GDAL's errors
            if isinstance(err, OSError):
                raise
            raise OutputError(f"{path}: cannot write the building layer ({' '.join(str(err).split())[:200]})") from None
    return path
