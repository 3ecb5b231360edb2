"""The TIFF header reader (``buildings.geo.tiff``): whether a file carries GeoTIFF tags, read
without rasterio, so that ``predict`` can refuse a GeoTIFF in one line when rasterio is missing and
still predict a plain TIFF as an image. (Its size reading is tested through ``serve.image_size``,
tests/deploy/test_serve.py.)"""

import cv2
import numpy as np
import pytest
from helpers import tiff_header, write_raster

from buildings.geo.tiff import GEOTIFF_TAGS, has_geotiff_tags, tiff_size


def test_a_geotiff_that_gdal_wrote_has_the_tags_and_a_plain_tiff_has_none(tmp_path):
    pytest.importorskip("rasterio")
    assert has_geotiff_tags(write_raster(tmp_path / "geo.tif"))
    plain = tmp_path / "plain.tif"
    assert cv2.imwrite(str(plain), np.zeros((30, 40, 3), np.uint8))
    assert not has_geotiff_tags(plain)
    assert tiff_size(plain.read_bytes()) == ("TIFF", 40, 30)


@pytest.mark.parametrize("tag", GEOTIFF_TAGS)
@pytest.mark.parametrize("big_endian", [False, True])
def test_each_georeference_tag_counts_in_either_byte_order(tag, big_endian, tmp_path):
    path = tmp_path / "a.tif"
    path.write_bytes(tiff_header(tag, big_endian=big_endian))
    assert has_geotiff_tags(path)
    path.write_bytes(tiff_header(big_endian=big_endian))
    assert not has_geotiff_tags(path)


def test_what_is_not_a_readable_tiff_has_no_tags(tmp_path):
    whole = tiff_header(34735)
    cases = {"empty.tif": b"", "png.tif": b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "cut.tif": whole[:12],
             "no-ifd.tif": b"II*\x00" + b"\0\0\0\0", "far-ifd.tif": b"II*\x00" + b"\xff\xff\xff\x00"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert not has_geotiff_tags(tmp_path / name), name
    assert not has_geotiff_tags(tmp_path / "missing.tif")
    assert not has_geotiff_tags(tmp_path)  # a folder
