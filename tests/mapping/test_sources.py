"""The inputs of ``buildings map``: folders, globs, text files of paths, STAC ItemCollections and
Items, and the refusals (missing files, colliding names), before any raster is opened."""

import json

import pytest

from buildings.errors import BuildingsError
from buildings.mapping.sources import resolve_sources


def _tifs(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / name
        path.write_bytes(b"II*\x00")  # only names matter here: nothing is opened
        paths.append(path)
    return paths


def test_folders_globs_and_lists_give_each_raster_once_in_order(tmp_path):
    a, b = _tifs(tmp_path / "tiles", "a.tif", "b.TIFF")
    (c,) = _tifs(tmp_path / "tiles" / "deeper", "c.tif")
    (tmp_path / "tiles" / "notes.txt").write_text("not a raster")
    (d,) = _tifs(tmp_path / "more", "d.tif")
    listing = tmp_path / "list.txt"
    listing.write_text("# the extra ones\n\nmore/d.tif\n" + str(a) + "\n")
    found = resolve_sources([tmp_path / "tiles", str(tmp_path / "more" / "*.tif"), listing])
    assert found == [a, b, c, d]  # a (listed again) and d (globbed, then listed) once each


def _stac_item(item_id, href, *, key="image", roles=("data",), media="image/tiff; application=geotiff"):
    return {"type": "Feature", "stac_version": "1.0.0", "id": item_id, "properties": {"datetime": "2026-01-01T00:00:00Z"},
            "geometry": {"type": "Point", "coordinates": [14.17, 57.73]}, "bbox": [14.17, 57.73, 14.17, 57.73],
            "links": [], "assets": {"thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
                                    key: {"href": href, "type": media, "roles": list(roles)}}}


def test_a_stac_item_collection_gives_each_items_geotiff_asset(tmp_path):
    pytest.importorskip("pystac")
    a, b = _tifs(tmp_path / "cogs", "a.tif", "b.tif")
    collection = {"type": "FeatureCollection", "features": [
        _stac_item("a", "cogs/a.tif"),  # relative to the JSON
        _stac_item("b", str(b), key="visual", roles=())]}  # no role: found by its key
    path = tmp_path / "items.json"
    path.write_text(json.dumps(collection))
    assert [p.resolve() for p in resolve_sources([path])] == [a.resolve(), b.resolve()]
    single = tmp_path / "item.json"
    single.write_text(json.dumps(_stac_item("a", "cogs/a.tif")))
    assert [p.resolve() for p in resolve_sources([single])] == [a.resolve()]


def test_bad_sources_are_refused_in_one_line_naming_them(tmp_path):
    pytest.importorskip("pystac")
    _tifs(tmp_path / "x", "same.tif")
    _tifs(tmp_path / "y", "same.tif")
    listing = tmp_path / "list.txt"
    listing.write_text("x/same.tif\nmissing.tif\n")
    stac = tmp_path / "items.json"
    stac.write_text(json.dumps({"type": "FeatureCollection", "features": [_stac_item("gone", "nowhere/a.tif")]}))
    no_asset = tmp_path / "thumbs.json"
    no_asset.write_text(json.dumps({"type": "FeatureCollection", "features": [
        _stac_item("t", "t.png", key="overview", roles=("overview",), media="image/png")]}))
    cases = [([tmp_path / "x", tmp_path / "y"], "have the same name"),
             ([listing], "list.txt line 2: missing.tif: no such file"),
             ([stac], "item 'gone': nowhere/a.tif: no such file"),
             ([no_asset], "item 't' has no GeoTIFF data asset"),
             ([str(tmp_path / "*.tif")], "matches no .tif"),
             ([tmp_path / "empty"], "no such file or folder")]
    for sources, expected in cases:
        with pytest.raises(BuildingsError) as caught:
            resolve_sources(sources)
        assert expected in str(caught.value) and "\n" not in str(caught.value), (sources, str(caught.value))
