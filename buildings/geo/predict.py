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

from buildings.errors import ConfigError, OutputError, require
from buildings.files import atomic_path, check_writable_folder, refuse_overwrites
from buildings.geo.raster import GeoRaster, gdal_reason
from buildings.geo.vectorize import BuildingPolygons, check_polygon_path, write_polygons

__all__ = ["Block", "RasterAssembly", "RasterReport", "check_raster_outputs", "predict_block", "predict_raster",
           "raster_blocks"]


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


@dataclass(frozen=True)
class Block:
    """One block of a raster: ``height`` x ``width`` pixels at (``row``, ``col``), read with its halo
    as rows ``top``..``bottom`` and columns ``left``..``right``; ``index`` = (block row, block column)."""

    index: tuple[int, int]
    row: int
    col: int
    height: int
    width: int
    top: int
    left: int
    bottom: int
    right: int
    open_edges: tuple[bool, bool, bool, bool]  # top, bottom, left, right: the raster goes on past them

    def inner(self) -> tuple[slice, slice]:
        """The block within what was read."""
        return (slice(self.row - self.top, self.row - self.top + self.height),
                slice(self.col - self.left, self.col - self.left + self.width))


def raster_blocks(height: int, width: int, block: int, halo: int) -> list[Block]:
    """The blocks of a ``height`` x ``width`` raster, row by row, each with ``halo`` pixels of context."""
    blocks = []
    for i, row in enumerate(range(0, height, block)):
        for j, col in enumerate(range(0, width, block)):
            h, w = min(block, height - row), min(block, width - col)
            top, left = max(0, row - halo), max(0, col - halo)
            bottom, right = min(height, row + h + halo), min(width, col + w + halo)
            blocks.append(Block((i, j), row, col, h, w, top, left, bottom, right,
                                (top > 0, bottom < height, left > 0, right < width)))
    return blocks


def predict_block(predictor, raster: GeoRaster, block: Block) -> tuple[np.ndarray, np.ndarray]:
    """The mask (uint8, by ``predictor.rule.block_mask``) and probabilities (float32) of ``block``."""
    image = raster.read(block.top, block.left, block.bottom - block.top, block.right - block.left)
    probs = predictor.probabilities(image)
    mask = predictor.rule.block_mask(probs, block.open_edges)
    inner = block.inner()
    return np.ascontiguousarray(mask[inner]), np.ascontiguousarray(probs[inner][..., 0])


class RasterAssembly:
    """The outputs of one raster from its predicted blocks, given row by row (:meth:`add`): the
    mask GeoTIFF written window by window into ``mask_temporary`` (tiled, DEFLATE) and the building
    polygons; :meth:`finish` applies the empty-image gates to the whole raster, closes and reads
    the mask back, and returns the report and the features."""

    def __init__(self, path, raster: GeoRaster, rule, *, mask_temporary=None, mask_out=None, polygons: bool = False,
                 simplify: float = 1.0, block: int = 2048):
        import rasterio

        self.rule, self.block, self.mask_out, self.temporary = rule, block, mask_out, mask_temporary
        self.height, self.width = raster.height, raster.width
        self.report = RasterReport(Path(path), raster.width, raster.height, raster.crs.to_string(),
                                   scaling=raster.scaling)
        self.transform = raster.transform
        self.polygons = (BuildingPolygons(raster.transform, min_area=rule.postprocess.min_area, simplify=simplify)
                         if polygons else None)
        self.writer = None
        self.peak = 0.0
        if mask_temporary is not None:
            profile = {"driver": "GTiff", "height": self.height, "width": self.width, "count": 1, "dtype": "uint8",
                       "crs": raster.crs, "transform": raster.transform, "tiled": True, "blockxsize": 256,
                       "blockysize": 256, "compress": "deflate", "predictor": 2}
            try:
                self.writer = rasterio.open(mask_temporary, "w", **profile)
            except rasterio.errors.RasterioError as err:
                raise OutputError(f"{mask_out}: cannot write the mask "
                                  f"({gdal_reason(err, {str(mask_temporary): mask_out})})") from None

    def add(self, block: Block, mask: np.ndarray, probs: np.ndarray) -> None:
        from rasterio.windows import Window

        self.peak = max(self.peak, float(probs.max()))
        self.report.building_pixels += int(mask.sum())
        if self.writer is not None:
            _write_block(self.writer, self.mask_out, mask, Window(block.col, block.row, block.width, block.height))
        if self.polygons is not None:
            self.polygons.add_block(block.index, block.row, block.col, mask, probs)

    def finish(self) -> tuple[RasterReport, list[dict] | None]:
        from rasterio.windows import Window

        rule, report = self.rule, self.report
        gated = rule.postprocess.gated and rule.empty(report.building_pixels, self.peak)
        if gated:  # the gates judge the raster as one image: nothing of it is a building
            report.building_pixels = 0
            self.polygons = BuildingPolygons(self.transform) if self.polygons is not None else None
            if self.writer is not None:
                for b in raster_blocks(self.height, self.width, self.block, 0):
                    _write_block(self.writer, self.mask_out, np.zeros((b.height, b.width), np.uint8),
                                 Window(b.col, b.row, b.width, b.height))
        report.gated = gated
        self.close()
        if self.temporary is not None:
            _check_written(self.temporary, self.mask_out, self.block)
        features = self.polygons.features() if self.polygons is not None else None
        if features is not None:
            report.polygons = len(features)
        return report, features

    def close(self) -> None:
        import rasterio

        if self.writer is not None:
            writer, self.writer = self.writer, None
            try:
                writer.close()
            except rasterio.errors.RasterioError as err:
                raise OutputError(f"{self.mask_out}: cannot write the mask "
                                  f"({gdal_reason(err, {str(self.temporary): self.mask_out})})") from None


def check_raster_outputs(path, *, mask_out=None, vectorize_out=None) -> None:
    """The outputs of :func:`predict_raster` checked before the first block is predicted (the command
    line checks them before it loads a model): at least one given, none overwriting the input, the
    polygons' file writable and pyogrio and shapely installed (one line naming the extra now, not
    after the whole raster), the mask's folder writable."""
    if mask_out is None and vectorize_out is None:
        raise ConfigError("nothing to write: give a mask GeoTIFF (--save-masks) or polygons (--vectorize)")
    refuse_overwrites([path], [(what, p) for what, p in (("--save-masks", mask_out), ("--vectorize", vectorize_out))
                               if p is not None])
    if vectorize_out is not None:
        check_polygon_path(vectorize_out)
        require("--vectorize", "deploy", "pyogrio", "shapely")
    if mask_out is not None:
        check_writable_folder(Path(mask_out).parent, mask_out)


def predict_raster(predictor, path, *, bands: tuple[int, ...] | None = None, mask_out=None, vectorize_out=None,
                   simplify: float = 1.0, block: int = 2048, halo: int | None = None,
                   progress: Callable[[int], None] | None = None, log: Callable[[str], None] | None = None
                   ) -> RasterReport:
    """Predict the GeoTIFF ``path`` into a GeoTIFF mask ``mask_out`` and/or building polygons
    ``vectorize_out`` (.gpkg / .geojson), by ``predictor.rule``. ``progress`` gets the number of
    blocks done."""
    if not predictor.task.binary:
        raise ConfigError("GeoTIFF prediction is for building (binary) models")
    check_raster_outputs(path, mask_out=mask_out, vectorize_out=vectorize_out)
    halo = predictor.overlap if halo is None else halo
    with GeoRaster.open(path, bands) as raster, contextlib.ExitStack() as stack:
        if raster.crs is None:
            raise ConfigError(f"{path}: has no CRS (not a georeferenced GeoTIFF); predict it as an image instead")
        if log and raster.scaling:
            log(f"{Path(path).name}: {raster.scaling}")
        temporary = stack.enter_context(atomic_path(mask_out, suffix=".tif")) if mask_out is not None else None
        assembly = RasterAssembly(path, raster, predictor.rule, mask_temporary=temporary, mask_out=mask_out,
                                  polygons=vectorize_out is not None, simplify=simplify, block=block)
        stack.callback(assembly.close)
        for b in raster_blocks(raster.height, raster.width, block, halo):
            assembly.add(b, *predict_block(predictor, raster, b))
            if progress:
                progress(1)
        report, features = assembly.finish()
        if features is not None:
            write_polygons(features, vectorize_out, raster.crs)
    return report


def block_count(path, block: int = 2048) -> int:
    """Blocks :func:`predict_raster` will go through (for a progress bar)."""
    import rasterio

    with rasterio.open(path) as dataset:
        return -(-dataset.height // block) * -(-dataset.width // block)
