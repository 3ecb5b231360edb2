"""A GeoTIFF of any size, streamed through the tiled predictor block by block.

Each ``block``-sized square is read with a ``halo`` of context on every side (rasterio window, 0
outside the raster), predicted by :meth:`Predictor.probabilities` (its own overlapping, blended
windows inside), and only the block's centre is kept: neighbouring blocks then agree along their
borders as the predictor's windows do. The mask goes to a tiled, DEFLATE-compressed GeoTIFF with the
input's CRS and transform (written window by window, renamed into place when complete), the
buildings to :class:`~buildings.geo.vectorize.BuildingPolygons`. Memory is a few blocks plus the
model's batch, whatever the raster's size.

Post-processing on a raster: the threshold, hole filling and min-area apply (min-area on whole
buildings: components that reach into the halo are kept in the mask, the polygons drop whole
buildings under it); the empty-tile gates are about contest tiles and are not applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError
from buildings.files import atomic_path
from buildings.geo.raster import GeoRaster
from buildings.geo.vectorize import BuildingPolygons, write_polygons
from buildings.inference.postprocess import Postprocess, fill_holes

__all__ = ["RasterReport", "predict_raster"]


@dataclass
class RasterReport:
    path: Path
    width: int
    height: int
    crs: str
    building_pixels: int = 0
    polygons: int | None = None
    scaling: str | None = None

    def describe(self) -> str:
        share = 100 * self.building_pixels / max(self.width * self.height, 1)
        text = f"{self.path.name}: {self.width}x{self.height} px, {self.crs}; {share:.2f}% building pixels"
        return text + (f", {self.polygons} building polygons" if self.polygons is not None else "")


def _drop_small_inside(mask: np.ndarray, min_area: int, open_edges: tuple[bool, bool, bool, bool]) -> np.ndarray:
    """Remove components under ``min_area`` pixels, except those touching an open edge (top,
    bottom, left, right) of the window: they continue outside it and their size is unknown here."""
    if min_area <= 1:
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    for is_open, edge in zip(open_edges, (labels[0], labels[-1], labels[:, 0], labels[:, -1]), strict=True):
        if is_open:
            keep[np.unique(edge)] = True
    keep[0] = False
    return keep[labels].astype(np.uint8)


def predict_raster(predictor, path, *, threshold: float = 0.5, postprocess: Postprocess | None = None,
                   bands: tuple[int, ...] | None = None, mask_out=None, vectorize_out=None,
                   simplify: float = 1.0, block: int = 2048, halo: int | None = None,
                   progress: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None
                   ) -> RasterReport:
    """Predict the GeoTIFF ``path`` into a GeoTIFF mask ``mask_out`` and/or building polygons
    ``vectorize_out`` (.gpkg / .geojson). ``progress`` gets the number of blocks done."""
    import rasterio
    from rasterio.windows import Window

    if not predictor.task.binary:
        raise ConfigError("GeoTIFF prediction is for building (binary) models")
    if mask_out is None and vectorize_out is None:
        raise ConfigError("nothing to write: give a mask GeoTIFF (--save-masks) or polygons (--vectorize)")
    post = postprocess or Postprocess()
    halo = predictor.overlap if halo is None else halo
    with GeoRaster.open(path, bands) as raster, contextlib.ExitStack() as stack:
        if raster.crs is None:
            raise ConfigError(f"{path}: has no CRS (not a georeferenced GeoTIFF); predict it as an image instead")
        if log and raster.scaling:
            log(f"{Path(path).name}: {raster.scaling}")
        height, width = raster.height, raster.width
        report = RasterReport(Path(path), width, height, raster.crs.to_string(), scaling=raster.scaling)
        polygons = None
        if vectorize_out is not None:
            polygons = BuildingPolygons(raster.transform, min_area=post.min_area, simplify=simplify)
        writer = None
        if mask_out is not None:
            temporary = stack.enter_context(atomic_path(mask_out, suffix=".tif"))
            profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
                       "crs": raster.crs, "transform": raster.transform, "tiled": True, "blockxsize": 256,
                       "blockysize": 256, "compress": "deflate", "predictor": 2}
            writer = stack.enter_context(rasterio.open(temporary, "w", **profile))
        for i, row in enumerate(range(0, height, block)):
            for j, col in enumerate(range(0, width, block)):
                h, w = min(block, height - row), min(block, width - col)
                top, left = max(0, row - halo), max(0, col - halo)
                bottom, right = min(height, row + h + halo), min(width, col + w + halo)
                image = raster.read(top, left, bottom - top, right - left)
                probs = predictor.probabilities(image)[..., 0]
                mask = (probs >= threshold).astype(np.uint8)
                if post.fill_holes:
                    mask = fill_holes(mask)
                mask = _drop_small_inside(mask, post.min_area, (top > 0, bottom < height, left > 0, right < width))
                inner = (slice(row - top, row - top + h), slice(col - left, col - left + w))
                mask, probs = np.ascontiguousarray(mask[inner]), probs[inner]
                report.building_pixels += int(mask.sum())
                if writer is not None:
                    writer.write(mask, 1, window=Window(col, row, w, h))
                if polygons is not None:
                    polygons.add_block((i, j), row, col, mask, probs)
                if progress:
                    progress(1)
        if writer is not None:
            writer.close()
        if polygons is not None:
            features = polygons.features()
            write_polygons(features, vectorize_out, raster.crs)
            report.polygons = len(features)
    return report


def block_count(path, block: int = 2048) -> int:
    """Blocks :func:`predict_raster` will go through (for a progress bar)."""
    import rasterio

    with rasterio.open(path) as dataset:
        return -(-dataset.height // block) * -(-dataset.width // block)
