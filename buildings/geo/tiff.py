"""A TIFF's first image file directory (IFD), read from its header bytes without rasterio or libtiff:
the size it declares (``buildings serve`` checks an upload's pixel budget before decoding it) and
whether it carries GeoTIFF tags (``buildings predict`` refuses a GeoTIFF in one line when rasterio,
which would keep its georeference, is missing, rather than predicting it as a plain image)."""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

__all__ = ["GEOTIFF_TAGS", "carries_geotiff_tags", "has_geotiff_tags", "is_tiff", "tiff_size"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_BIGTIFF_MAGIC = (b"II+\x00", b"MM\x00+")
_MAX_IFD_ENTRIES = 4096  # real TIFFs have tens of tags; ImageWidth/ImageLength (256/257) come first
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory (GeoTIFF 1.1, OGC 19-008r4)
GEOTIFF_TAGS = (33550, 33922, 34264, 34735)


def is_tiff(data: bytes) -> bool:
    """TIFF or BigTIFF, either byte order."""
    return bytes(data[:4]) in _TIFF_MAGIC + _BIGTIFF_MAGIC


def _first_ifd(data: bytes):
    """(byte order, BigTIFF?, the first IFD's entries as (tag, type, entry bytes, offset of the value
    in the entry)), or None for a header that cannot be read."""
    if not is_tiff(data):
        return None
    order = "<" if data[:2] == b"II" else ">"
    big = bytes(data[:4]) in _BIGTIFF_MAGIC
    try:
        if big:
            offset_size, _ = struct.unpack(order + "HH", data[4:8])
            if offset_size != 8:
                return None
            (ifd,) = struct.unpack(order + "Q", data[8:16])
            count_format, entry_size, value_at = "Q", 20, 12
        else:
            (ifd,) = struct.unpack(order + "I", data[4:8])
            count_format, entry_size, value_at = "H", 12, 8
        count_size = struct.calcsize(count_format)
        (count,) = struct.unpack(order + count_format, data[ifd:ifd + count_size])
    except struct.error:
        return None
    if not ifd:
        return None
    entries = []
    for index in range(min(count, _MAX_IFD_ENTRIES)):
        at = ifd + count_size + index * entry_size
        entry = bytes(data[at:at + entry_size])
        if len(entry) < entry_size:
            break
        tag, kind = struct.unpack(order + "HH", entry[:4])
        entries.append((tag, kind, entry, value_at))
    return order, big, entries


def tiff_size(data: bytes) -> tuple[str, int, int] | None:
    """("TIFF" or "BigTIFF", width, height): ImageWidth and ImageLength of the first IFD (the image
    libtiff and GDAL open); None when the header does not give them."""
    ifd = _first_ifd(data)
    if ifd is None:
        return None
    order, big, entries = ifd
    sizes = {}
    for tag, kind, entry, value_at in entries:
        if tag in (256, 257):
            value_format = {3: "H", 4: "I", 16: "Q"}.get(kind)  # SHORT, LONG, LONG8 (BigTIFF)
            if value_format is None:
                return None
            (sizes[tag],) = struct.unpack_from(order + value_format, entry, value_at)
            if len(sizes) == 2:
                return ("BigTIFF" if big else "TIFF"), sizes[256], sizes[257]
    return None


def has_geotiff_tags(path) -> bool:
    """Whether the file ``path`` is a TIFF whose first IFD carries a GeoTIFF georeference tag (a
    geokey directory, tie point, pixel scale or transformation). Reads the header only; False for
    a file that cannot be read."""
    try:
        with Path(path).open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return carries_geotiff_tags(data)  # the mapping reads only the pages the header and the IFD are on
    except (OSError, ValueError):  # unreadable, or empty (nothing to map)
        return False


def carries_geotiff_tags(data) -> bool:
    """Whether ``data`` (bytes, or a mapping of a file) is a TIFF whose first IFD carries a GeoTIFF
    georeference tag (:func:`has_geotiff_tags` for a file)."""
    ifd = _first_ifd(data)
    return ifd is not None and any(tag in GEOTIFF_TAGS for tag, *_ in ifd[2])
