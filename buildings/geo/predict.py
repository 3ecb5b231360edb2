"""A GeoTIFF of any size, streamed through the tiled predictor block by block.

Each ``block``-sized square is read with a ``halo`` of context on every side (rasterio window, 0
outside the raster), predicted by :meth:`Predictor.probabilities` (its own overlapping, blended
windows inside), and only the block's centre is kept: neighbouring blocks then agree along their
borders as the predictor's windows do. The mask goes to a tiled, DEFLATE-compressed GeoTIFF with the
input's CRS and transform (written window by window, renamed into place when complete), the
buildings to :class:`~buildings.geo.vectorize.BuildingPolygons`. Memory is a few blocks plus the
model's batch, whatever the raster's size.

Post-processing on a raster is the predictor's rule (``inference.prediction.MaskRule``), as for a
tile: the threshold, min-area, hole filling, and the empty-image gates with the whole raster as the
image (judged once every block is predicted; a gated raster's mask is rewritten empty and it has no
polygons). Within a block, components touching an open block edge are kept whatever their size
(``MaskRule.block_mask``); the polygons, joined across blocks, then drop whole buildings under
min-area. A raster of one block gets exactly a tile's mask.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildings.errors import ConfigError, OutputError
from buildings.files import atomic_path, check_writable_folder, refuse_overwrites
from buildings.geo.raster import GeoRaster, gdal_reason
from buildings.geo.vectorize import BuildingPolygons, check_polygon_path, write_polygons

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
    gated: bool = False  # the empty-image gates dropped the whole raster

    def describe(self) -> str:
        share = 100 * self.building_pixels / max(self.width * self.height, 1)
        text = f"{self.path.name}: {self.width}x{self.height} px, {self.crs}; {share:.2f}% building pixels"
        text += " (all dropped by the empty-image gates)" if self.gated else ""
        return text + (f", {self.polygons} building polygons" if self.polygons is not None else "")


def _write_block(writer, target, mask, window) -> None:
    import rasterio

    try:
        writer.write(mask, 1, window=window)
    except rasterio.errors.RasterioError as err:
        raise OutputError(f"{target}: cannot write the mask ({gdal_reason(err, {writer.name: target})})") from None


def _check_written(temporary, target, block: int) -> None:
    """Read the closed mask back before it is renamed into place: GDAL reports some write failures
    (a full disk while it flushes the last tiles) only on stderr, and the file would be truncated."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(temporary) as written:
            for row in range(0, written.height, block):
                for col in range(0, written.width, block):
                    written.read(1, window=Window(col, row, min(block, written.width - col),
                                                  min(block, written.height - row)))
    except rasterio.errors.RasterioError as err:
        reason = gdal_reason(err, {temporary: target})
        raise OutputError(f"{target}: the mask did not write whole ({reason}; is the disk full?)") from None


def predict_raster(predictor, path, *, bands: tuple[int, ...] | None = None, mask_out=None, vectorize_out=None,
                   simplify: float = 1.0, block: int = 2048, halo: int | None = None,
                   progress: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None
                   ) -> RasterReport:
    """Predict the GeoTIFF ``path`` into a GeoTIFF mask ``mask_out`` and/or building polygons
    ``vectorize_out`` (.gpkg / .geojson), by ``predictor.rule``. ``progress`` gets the number of
    blocks done."""
    import rasterio
    from rasterio.windows import Window

    if not predictor.task.binary:
        raise ConfigError("GeoTIFF prediction is for building (binary) models")
    if mask_out is None and vectorize_out is None:
        raise ConfigError("nothing to write: give a mask GeoTIFF (--save-masks) or polygons (--vectorize)")
    refuse_overwrites([path], [(what, p) for what, p in (("--save-masks", mask_out), ("--vectorize", vectorize_out))
                               if p is not None])
    if vectorize_out is not None:  # every output checked before the first block is predicted
        check_polygon_path(vectorize_out)
        try:  # missing: one line naming the extra now, not after the whole raster
            import pyogrio  # noqa: F401
        except ImportError:
            raise ConfigError("--vectorize needs pyogrio (and shapely): pip install -e \".[deploy]\"") from None
    if mask_out is not None:
        check_writable_folder(Path(mask_out).parent, mask_out)
    rule = predictor.rule
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
            polygons = BuildingPolygons(raster.transform, min_area=rule.postprocess.min_area, simplify=simplify)
        writer = None
        if mask_out is not None:
            temporary = stack.enter_context(atomic_path(mask_out, suffix=".tif"))
            profile = {"driver": "GTiff", "height": height, "width": width, "count": 1, "dtype": "uint8",
                       "crs": raster.crs, "transform": raster.transform, "tiled": True, "blockxsize": 256,
                       "blockysize": 256, "compress": "deflate", "predictor": 2}
            writer = stack.enter_context(rasterio.open(temporary, "w", **profile))
        peak = 0.0
        for i, row in enumerate(range(0, height, block)):
            for j, col in enumerate(range(0, width, block)):
                h, w = min(block, height - row), min(block, width - col)
                top, left = max(0, row - halo), max(0, col - halo)
                bottom, right = min(height, row + h + halo), min(width, col + w + halo)
                image = raster.read(top, left, bottom - top, right - left)
                probs = predictor.probabilities(image)
                mask = rule.block_mask(probs, (top > 0, bottom < height, left > 0, right < width))
                inner = (slice(row - top, row - top + h), slice(col - left, col - left + w))
                mask, probs = np.ascontiguousarray(mask[inner]), probs[inner][..., 0]
                peak = max(peak, float(probs.max()))
                report.building_pixels += int(mask.sum())
                if writer is not None:
                    _write_block(writer, mask_out, mask, Window(col, row, w, h))
                if polygons is not None:
                    polygons.add_block((i, j), row, col, mask, probs)
                if progress:
                    progress(1)
        gated = rule.postprocess.gated and rule.empty(report.building_pixels, peak)
        if gated:  # the gates judge the raster as one image: nothing of it is a building
            report.building_pixels = 0
            polygons = BuildingPolygons(raster.transform) if polygons is not None else None
            if writer is not None:
                for row in range(0, height, block):
                    for col in range(0, width, block):
                        h, w = min(block, height - row), min(block, width - col)
                        _write_block(writer, mask_out, np.zeros((h, w), np.uint8), Window(col, row, w, h))
        report.gated = gated
        if writer is not None:
            try:
                writer.close()
            except rasterio.errors.RasterioError as err:
                raise OutputError(f"{mask_out}: cannot write the mask ({gdal_reason(err, {temporary: mask_out})})") from None
            _check_written(temporary, mask_out, block)
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
