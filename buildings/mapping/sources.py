"""The rasters of a mapping job: folders, globs, text files of paths, STAC ItemCollections.

``resolve_sources(["tiles/", "more/*.tif", "list.txt", "items.json"])`` gives the GeoTIFF paths in
order, each once. A text file holds one path per line (``#`` comments, blank lines skipped; relative
paths are relative to the file); a ``.json`` file is a STAC ItemCollection or Item (read by
``pystac``): each item gives its data asset (roles ``data``, or the keys ``image``, ``visual``,
``data``; GeoTIFF / COG media types), relative hrefs resolved against the JSON. Outputs are named
after the rasters' file names, so two rasters with the same stem are refused before any work.
"""

from __future__ import annotations

import glob
from pathlib import Path

from buildings.errors import ConfigError, DataError, missing_extra

__all__ = ["RASTER_SUFFIXES", "resolve_sources"]

RASTER_SUFFIXES = (".tif", ".tiff")
_ASSET_KEYS = ("image", "visual", "data")


def resolve_sources(items) -> list[Path]:
    paths: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if any(ch in text for ch in "*?[") and not path.exists():
            found = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).suffix.lower() in RASTER_SUFFIXES)
            if not found:
                raise ConfigError(f"{text}: the pattern matches no .tif / .tiff file")
            paths += found
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in RASTER_SUFFIXES and p.is_file())
            if not found:
                raise ConfigError(f"{path}: the folder holds no .tif / .tiff file")
            paths += found
        elif path.suffix.lower() == ".txt":
            paths += _listed(path)
        elif path.suffix.lower() == ".json":
            paths += _stac(path)
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{path}: no such file or folder")
    unique, stems = [], {}
    for p in paths:
        resolved = p.resolve()
        if resolved in stems.values():
            continue
        if p.stem in stems:
            raise ConfigError(f"{stems[p.stem]} and {p} have the same name: the outputs (masks/{p.stem}.tif) "
                              "would collide; rename one")
        stems[p.stem] = resolved
        unique.append(p)
    return unique


def _local_file(name: str, listing: Path, where: str, note: str = "") -> Path:
    """The raster ``name`` that the list or STAC file ``listing`` gives: absolute, or relative to
    ``listing``'s folder; it must be an existing file, else a :class:`DataError` starting with
    ``where`` (the list and line, or the JSON and item) and naming ``name`` as written."""
    target = Path(name) if Path(name).is_absolute() else listing.parent / name
    if not target.is_file():
        raise DataError(f"{where}: {name}: no such file{note}")
    return target


def _listed(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read the list of rasters ({err})") from None
    out = []
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append(_local_file(line, path, f"{path} line {number}"))
    if not out:
        raise ConfigError(f"{path}: lists no raster")
    return out


def _stac(path: Path) -> list[Path]:
    try:
        import pystac
    except ImportError:
        raise ConfigError(missing_extra(f"{path}: reading STAC", "pystac", "map")) from None
    try:
        collection = pystac.ItemCollection.from_file(str(path))
        items = list(collection)
    except Exception:  # noqa: BLE001 - a single Item is a STAC document too
        try:
            items = [pystac.Item.from_file(str(path))]
        except Exception as err:  # noqa: BLE001 - pystac raises many kinds for a bad document
            raise DataError(f"{path}: not a STAC ItemCollection or Item ({' '.join(str(err).split())[:160]})") from None
    out = []
    for item in items:
        asset = _data_asset(item)
        if asset is None:
            raise DataError(f"{path}: item {item.id!r} has no GeoTIFF data asset (roles 'data', or keys "
                            f"{', '.join(_ASSET_KEYS)})")
        out.append(_local_file(asset.get_absolute_href() or asset.href, path, f"{path}: item {item.id!r}",
                               note=" (only local files are read)"))
    if not out:
        raise ConfigError(f"{path}: holds no STAC item")
    return out


def _data_asset(item):
    def tiff(asset) -> bool:
        kind = (asset.media_type or "").lower()
        return "tiff" in kind or Path(asset.href).suffix.lower() in RASTER_SUFFIXES

    assets = item.assets
    for asset in assets.values():
        if "data" in (asset.roles or []) and tiff(asset):
            return asset
    for key in _ASSET_KEYS:
        if key in assets and tiff(assets[key]):
            return assets[key]
    return None
