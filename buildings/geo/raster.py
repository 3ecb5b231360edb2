"""Reading a GeoTIFF as RGB uint8 windows (rasterio), whatever its band count and bit depth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildings.errors import ConfigError, DataError, missing_extra

__all__ = ["GeoRaster", "is_georeferenced", "is_geotiff", "parse_bands"]

PERCENTILES = (2.0, 98.0)  # 16-bit / float rasters: this range of each band maps to 0..255
SAMPLE_SIDE = 1024  # the decimated read the percentiles are measured on: at most this many pixels a side


def _rasterio():
    try:
        import rasterio
    except ImportError:
        raise ConfigError(missing_extra("GeoTIFF input", "rasterio", "deploy")) from None
    return rasterio


def is_geotiff(path) -> bool:
    """A single .tif / .tiff file (GeoTIFFs go through rasterio, with their georeference)."""
    path = Path(path)
    return path.is_file() and path.suffix.lower() in (".tif", ".tiff")


def is_georeferenced(path) -> bool:
    """A single .tif / .tiff file with a CRS: predicted as a raster, in blocks, into georeferenced
    outputs (without a CRS it is an image like any other). Without rasterio, a TIFF whose header
    carries GeoTIFF tags is refused in one line naming the extra (read as a plain image it would
    lose its georeference); one without them is an image."""
    if not is_geotiff(path):
        return False
    try:
        import rasterio
    except ImportError:
        from buildings.geo.tiff import has_geotiff_tags

        if has_geotiff_tags(path):
            raise ConfigError(missing_extra(f"{path}: reading a GeoTIFF with its georeference", "rasterio",
                                            "deploy")) from None
        return False
    try:
        with rasterio.open(path) as dataset:
            return dataset.crs is not None
    except rasterio.errors.RasterioIOError:
        return False


def gdal_reason(err: BaseException, names: dict | None = None) -> str:
    """What GDAL said, from rasterio's exception and the ones chained to it ("Read failed. See
    previous exception" alone says nothing), on one line; ``names`` maps a temporary's path to what
    it stands for, so that no message names the hidden temporary."""
    reasons, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        text = " ".join(str(err).split())
        if text and "See previous exception" not in text and text not in reasons:
            reasons.append(text)
        err = err.__cause__ or err.__context__
    text = "; ".join(reasons)
    for hidden, shown in sorted((names or {}).items(), key=lambda item: -len(str(item[0]))):
        text = text.replace(str(hidden), str(shown)).replace(Path(hidden).name, Path(shown).name)
    return text[:200] or "GDAL gave no reason"


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    """``--bands 3,2,1`` → (3, 2, 1): 1-based band numbers in R, G, B order (one band = grey)."""
    if text is None:
        return None
    try:
        bands = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise ConfigError(f"--bands {text!r}: give 1-based band numbers, e.g. 1,2,3") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise ConfigError(f"--bands {text!r}: give three band numbers (R,G,B) or one (grey), counted from 1")
    return bands


@dataclass
class GeoRaster:
    """An open GeoTIFF: ``read(row, col, height, width)`` gives RGB uint8 (missing pixels outside the
    raster are 0). ``scaling`` says how values became 8 bits (None for 8-bit rasters)."""

    path: Path
    bands: tuple[int, ...]
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def open(cls, path, bands: tuple[int, ...] | None = None) -> GeoRaster:
        rasterio = _rasterio()
        path = Path(path)
        try:
            dataset = rasterio.open(path)
        except rasterio.errors.RasterioIOError as err:
            raise DataError(f"{path}: not a readable GeoTIFF ({str(err)[:160]})") from None
        count = dataset.count
        if bands is None:
            bands = (1, 2, 3) if count >= 3 else (1,)
        if max(bands) > count:
            dataset.close()
            raise ConfigError(f"{path}: has {count} band(s); --bands {','.join(map(str, bands))} asks for band {max(bands)}")
        transform = dataset.transform
        if dataset.crs is not None and abs(transform.a * transform.e - transform.b * transform.d) == 0:
            dataset.close()
            raise DataError(f"{path}: its geotransform {tuple(transform)[:6]} gives pixels of no area (a pixel "
                            "size of 0): fix the georeference, or predict it as a plain image")
        raster = cls(path, tuple(bands))
        raster.dataset = dataset
        if any(np.dtype(dataset.dtypes[b - 1]) != np.uint8 for b in bands):
            raster._measure_percentiles()
        return raster

    def _measure_percentiles(self) -> None:
        step = max(1, int(np.ceil(max(self.height, self.width) / SAMPLE_SIDE)))
        shape = (len(self.bands), max(1, self.height // step), max(1, self.width // step))
        sample = self.dataset.read(list(self.bands), out_shape=shape, masked=True).astype(np.float64)
        low, high = [], []
        for band in sample:
            values = band.compressed()
            values = values[np.isfinite(values)]
            if not values.size:
                raise DataError(f"{self.path}: band has no valid pixels to scale")
            a, b = np.percentile(values, PERCENTILES)
            low.append(a)
            high.append(b if b > a else a + 1)
        self.low, self.high = np.array(low), np.array(high)

    @property
    def height(self) -> int:
        return self.dataset.height

    @property
    def width(self) -> int:
        return self.dataset.width

    @property
    def crs(self):
        return self.dataset.crs

    @property
    def transform(self):
        return self.dataset.transform

    @property
    def scaling(self) -> str | None:
        if self.low is None:
            return None
        ranges = ", ".join(f"band {b}: {lo:g}..{hi:g}" for b, lo, hi in zip(self.bands, self.low, self.high))
        return f"scaled to 8 bits by the {PERCENTILES[0]:g}-{PERCENTILES[1]:g} percentiles ({ranges})"

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of the window at (row, col); outside the raster is 0."""
        from rasterio.windows import Window

        try:
            data = self.dataset.read(list(self.bands), window=Window(col, row, width, height), boundless=True,
                                     fill_value=0)
        except _rasterio().errors.RasterioError as err:
            raise DataError(f"{self.path}: cannot read rows {row}..{row + height - 1}, columns {col}..{col + width - 1} "
                            f"({gdal_reason(err)}): the file is damaged or truncated") from None
        if self.low is not None:
            scaled = (data.astype(np.float32) - self.low[:, None, None]) / (self.high - self.low)[:, None, None]
            data = np.clip(np.nan_to_num(scaled) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = np.moveaxis(data, 0, -1)
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        return np.ascontiguousarray(image)

    def close(self) -> None:
        self.dataset.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
