"""``buildings map``: many GeoTIFFs -> per-file masks (COGs) -> one building layer -> a summary.

:func:`run_map` plans every source (opening each raster: an unreadable one is reported in one line
and left out, the rest go on), skips the files a previous run of the same job committed, predicts
the others' windows on an engine (``engine``), writes each file's outputs as its windows arrive
(:class:`FileWriter`), then merges every committed file's buildings into ``buildings.gpkg``
(``merge``) and writes ``summary.json`` and ``quicklook.png``.

The output folder::

    DIR/job.json                  the job's options (a rerun with other options is refused)
    DIR/masks/<stem>.tif          the mask, a Cloud-Optimised GeoTIFF in the input's CRS and grid
    DIR/probabilities/<stem>.tif  with --save-probabilities: probability x 255 (uint8), a COG
    DIR/parts/<stem>.gpkg         the file's buildings, in its CRS
    DIR/state/<stem>.json         the file's commit: written last, after its outputs were renamed into place
    DIR/buildings.gpkg            the merged layer, in the target CRS
    DIR/summary.json, DIR/quicklook.png

Every file is written to a temporary beside it and renamed; a file whose state is missing, or
whose source changed (size, modification time), is predicted again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from buildings.errors import BuildingsError, ConfigError, OutputError, require
from buildings.files import atomic_path, check_writable_folder, refuse_overwrites, write_text
from buildings.geo.predict import Block, RasterAssembly, raster_blocks
from buildings.mapping.engine import PredictorSpec, WindowResult, run_local, run_ray
from buildings.mapping.sources import resolve_sources

__all__ = ["MAP_MODULES", "FilePlan", "MapOptions", "MapResult", "check_installed", "run_map"]

MAP_MODULES = ("rasterio", "shapely", "pyogrio")  # read the rasters, trace and merge the buildings, write the layers


def check_installed() -> None:
    """Refuse a mapping job, before a model is loaded or a raster opened, when the deploy extra's
    GIS modules are not installed: one line naming the module and the extra."""
    require("buildings map", "deploy", *MAP_MODULES)


@dataclass(frozen=True)
class MapOptions:
    out: Path
    crs: str | None = None  # target CRS of the merged layer; None: the first input's
    block: int = 2048
    bands: tuple[int, ...] | None = None
    simplify: float = 1.0  # per-file polygons: Douglas-Peucker tolerance in pixels (predict --simplify)
    simplify_m: float = 0.0  # merged layer: in metres
    min_area_m2: float = 0.0
    regularize: bool = False
    save_probabilities: bool = False

    def key(self, spec: PredictorSpec) -> str:
        """What a file's outputs depend on: a rerun with another key predicts again."""
        payload = {"checkpoints": [_signature(Path(c)) for c in spec.checkpoints], "options": spec.options,
                   "rule": repr(spec.rule), "block": self.block, "bands": self.bands, "simplify": self.simplify,
                   "probabilities": self.save_probabilities}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _signature(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


@dataclass
class FilePlan:
    stem: str
    path: Path
    bands: tuple[int, ...] | None
    blocks: list[Block]
    width: int
    height: int
    crs_wkt: str
    bounds: tuple[float, float, float, float]
    pixel_size: float
    pixel_area_m2: float


@dataclass
class MapResult:
    out: Path
    summary: dict
    failed: dict = field(default_factory=dict)  # path -> reason


def _plan(path: Path, options: MapOptions, halo: int) -> FilePlan:
    from buildings.geo.raster import GeoRaster
    from buildings.geo.vectorize import feature_properties

    with GeoRaster.open(path, options.bands) as raster:
        if raster.crs is None:
            raise ConfigError(f"{path}: has no CRS (not a georeferenced GeoTIFF)")
        transform = raster.transform
        bounds = raster.dataset.bounds
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        centre = {"area": pixel_area, "pixels": 1, "mean_probability": 0.0}
        from shapely.geometry import Point

        centre["geometry"] = Point((bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2)
        area_m2 = feature_properties(centre, raster.crs).get("area_m2", 0.0)
        return FilePlan(path.stem, path, options.bands, raster_blocks(raster.height, raster.width, options.block, halo),
                        raster.width, raster.height, raster.crs.to_wkt(), tuple(bounds), abs(transform.a), area_m2)


class FileWriter:
    """One file's outputs, fed its windows' results in any order, each (file, block) taken once."""

    def __init__(self, plan: FilePlan, options: MapOptions, rule):
        import contextlib

        from buildings.geo.raster import GeoRaster

        self.plan, self.options = plan, options
        self.stack = contextlib.ExitStack()
        self.mask_path = options.out / "masks" / f"{plan.stem}.tif"
        self.temporary = self.stack.enter_context(atomic_path(self.mask_path.with_name(f".{plan.stem}.tiled.tif")))
        raster = self.stack.enter_context(GeoRaster.open(plan.path, plan.bands))
        self.assembly = RasterAssembly(plan.path, raster, rule, mask_temporary=self.temporary,
                                       mask_out=self.mask_path, polygons=True, simplify=options.simplify,
                                       block=options.block)
        self.stack.callback(self.assembly.close)
        self.probabilities = None
        if options.save_probabilities:
            self.probabilities_temporary = self.stack.enter_context(
                atomic_path(options.out / "probabilities" / f".{plan.stem}.tiled.tif"))
            self.probabilities = self.stack.enter_context(_tiled_writer(self.probabilities_temporary, raster))
        self.crs = raster.crs
        self.pending: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self.order = [b.index for b in plan.blocks]
        self.blocks = {b.index: b for b in plan.blocks}
        self.next = 0
        self.taken: list[tuple[int, int]] = []
        self.started = time.perf_counter()

    @property
    def complete(self) -> bool:
        return self.next == len(self.order)

    def add(self, result: WindowResult) -> None:
        if result.index in self.pending or result.index in self.taken:
            return  # a retried window's second answer: the same pixels, taken once
        self.pending[result.index] = (result.mask, result.probs)
        while self.next < len(self.order) and self.order[self.next] in self.pending:
            index = self.order[self.next]
            mask, probs = self.pending.pop(index)
            block = self.blocks[index]
            self.assembly.add(block, mask, probs)
            if self.probabilities is not None:
                from rasterio.windows import Window

                scaled = np.round(np.clip(probs, 0, 1) * 255).astype(np.uint8)
                self.probabilities.write(scaled, 1, window=Window(block.col, block.row, block.width, block.height))
            self.taken.append(index)
            self.next += 1

    def commit(self, key: str) -> dict:
        """Finish the mask (gates, read back), write the COG(s), the parts and, last, the state."""
        from buildings.geo.vectorize import write_polygons

        report, features = self.assembly.finish()
        _to_cog(self.temporary, self.mask_path)
        if self.probabilities is not None:
            self.probabilities.close()
            _to_cog(self.probabilities_temporary, self.options.out / "probabilities" / f"{self.plan.stem}.tif")
        write_polygons(features or [], self.options.out / "parts" / f"{self.plan.stem}.gpkg", self.crs)
        self.stack.close()
        state = {"source": _signature(self.plan.path), "key": key, "buildings": len(features or []),
                 "building_pixels": report.building_pixels, "gated": report.gated, "width": self.plan.width,
                 "height": self.plan.height, "crs_wkt": self.plan.crs_wkt, "bounds": list(self.plan.bounds),
                 "pixel_size": self.plan.pixel_size, "area_km2": self.plan.width * self.plan.height
                 * self.plan.pixel_area_m2 / 1e6, "windows": [list(i) for i in self.taken],
                 "seconds": time.perf_counter() - self.started}
        write_text(self.options.out / "state" / f"{self.plan.stem}.json", json.dumps(state, indent=1) + "\n")
        return state

    def abandon(self) -> None:
        """A failed file: its temporaries go, nothing of it is committed."""
        try:
            self.stack.__exit__(RuntimeError, RuntimeError("abandoned"), None)
        except RuntimeError:
            pass


def _tiled_writer(path, raster):
    import rasterio

    profile = {"driver": "GTiff", "height": raster.height, "width": raster.width, "count": 1, "dtype": "uint8",
               "crs": raster.crs, "transform": raster.transform, "tiled": True, "blockxsize": 256,
               "blockysize": 256, "compress": "deflate", "predictor": 2}
    return rasterio.open(path, "w", **profile)


def _to_cog(tiled, target) -> None:
    """The tiled GeoTIFF ``tiled`` as a Cloud-Optimised GeoTIFF at ``target`` (GDAL's COG driver:
    256-pixel tiles, DEFLATE, overviews by nearest neighbour), atomically."""
    import rasterio
    import rasterio.shutil

    from buildings.geo.raster import gdal_reason

    with atomic_path(target, suffix=".tif") as temporary:
        try:
            rasterio.shutil.copy(str(tiled), str(temporary), driver="COG", COMPRESS="DEFLATE", PREDICTOR="2",
                                 BLOCKSIZE="256", OVERVIEW_RESAMPLING="NEAREST", RESAMPLING="NEAREST")
        except rasterio.errors.RasterioError as err:
            raise OutputError(f"{target}: cannot write the COG ({gdal_reason(err, {str(temporary): target})})") from None


def _committed(options: MapOptions, plan_path: Path, key: str) -> dict | None:
    path = options.out / "state" / f"{plan_path.stem}.json"
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    outputs = [options.out / "masks" / f"{plan_path.stem}.tif", options.out / "parts" / f"{plan_path.stem}.gpkg"]
    if state.get("key") != key or state.get("source") != _signature(plan_path) or not all(p.is_file() for p in outputs):
        return None
    return state


def run_map(sources, spec: PredictorSpec, options: MapOptions, *, engine: str = "ray", address: str | None = None,
            actors: int | None = None, resume: bool = False, say: Callable[[str], None] = print) -> MapResult:
    started = time.perf_counter()
    check_installed()
    out = Path(options.out)
    paths = resolve_sources(sources)
    job_file = out / "job.json"
    key = options.key(spec)
    if resume and not job_file.is_file():
        raise ConfigError(f"{out}: holds no mapping job to resume (no job.json)")
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous.get("key") != key:
            raise ConfigError(f"{out} holds a job with other model or prediction options: use another --out, or the "
                              "same options to continue it")
    outputs = [(f"masks/{p.stem}.tif", out / "masks" / f"{p.stem}.tif") for p in paths]
    outputs += [(f"parts/{p.stem}.gpkg", out / "parts" / f"{p.stem}.gpkg") for p in paths]
    outputs += [("buildings.gpkg", out / "buildings.gpkg")]
    refuse_overwrites(paths, outputs)
    for folder in ("masks", "parts", "state", *(("probabilities",) if options.save_probabilities else ())):
        check_writable_folder(out / folder)
    write_text(job_file, json.dumps({"key": key, "checkpoints": list(spec.checkpoints), "options": spec.options,
                                     "rule": spec.rule.describe() if spec.rule is not None else None,
                                     "map_options": {k: str(v) for k, v in asdict(options).items()}}, indent=1) + "\n")
    failed: dict[str, str] = {}
    plans, states = [], {}
    for path in paths:
        try:
            plan = _plan(path, options, spec.overlap)
        except BuildingsError as err:
            failed[str(path)] = str(err)
            say(f"skipped {path}: {err}")
            continue
        state = _committed(options, path, key)
        if state is not None:
            states[plan.stem] = state
        else:
            plans.append(plan)
    skipped = len(states)
    if skipped:
        say(f"{skipped} file(s) already committed by an earlier run of this job: skipped")
    say(f"{len(plans)} file(s) to predict, {sum(len(p.blocks) for p in plans)} window(s) of up to "
        f"{options.block} px, engine {engine}")
    predict_started = time.perf_counter()
    predicted, workers, first_window = _predict(plans, spec, options, key, engine=engine, address=address,
                                                actors=actors, say=say, failed=failed)
    states.update(predicted)
    predict_seconds = time.perf_counter() - predict_started
    return _finish(out, paths, states, failed, options, skipped=skipped, engine=engine, started=started,
                   predict_seconds=predict_seconds, first_window=first_window,
                   predicted=[p for p in plans if p.stem in states], say=say, workers=workers)


def _predict(plans, spec, options, key, *, engine, address, actors, say,
             failed) -> tuple[dict, dict, float | None]:
    """Predict the plans' windows on the engine, committing each file as its last window arrives.
    Returns the committed files' states by stem, the workers' peak resident MB by pid, and the
    seconds from the engine's start to its first result (None when no window was predicted)."""
    by_stem = {p.stem: p for p in plans}
    writers: dict[str, FileWriter] = {}
    states: dict[str, dict] = {}
    workers: dict[int, float] = {}  # pid -> peak resident MB
    first_window: float | None = None
    engine_started = time.perf_counter()
    if not plans:
        return states, workers, first_window
    stream = run_ray(spec, plans, actors=actors, address=address, say=say) if engine == "ray" else run_local(spec, plans)
    try:
        for result in stream:
            if first_window is None:  # the engine's start: Ray, the actors, their models, the first window
                first_window = time.perf_counter() - engine_started
                say(f"first window after {first_window:.1f} s")
            workers[result.worker] = max(workers.get(result.worker, 0.0), result.peak_rss_mb)
            stem = result.stem
            plan = by_stem[stem]
            if str(plan.path) in failed:
                continue
            if result.error is not None:
                failed[str(plan.path)] = result.error
                say(f"failed {plan.path}: {result.error}")
                if stem in writers:
                    writers.pop(stem).abandon()
                continue
            if stem not in writers:
                writers[stem] = FileWriter(plan, options, spec.rule)
            writer = writers[stem]
            writer.add(result)
            if writer.complete:
                try:
                    states[stem] = writer.commit(key)
                    say(f"committed {plan.path.name}: {states[stem]['buildings']} buildings")
                except BuildingsError as err:
                    failed[str(plan.path)] = str(err)
                    say(f"failed {plan.path}: {err}")
                    writer.abandon()
                writers.pop(stem)
    finally:
        for writer in writers.values():
            writer.abandon()
    return states, workers, first_window


def _finish(out: Path, paths, states, failed, options, *, skipped, engine, started, predict_seconds, first_window,
            predicted, say, workers) -> MapResult:
    from rasterio.crs import CRS

    from buildings.mapping.merge import PartFile, merge_parts, write_layer

    committed = [p for p in paths if p.stem in states]
    if not committed:
        raise ConfigError("no input could be mapped: " + "; ".join(failed.values())[:400])
    first = states[committed[0].stem]
    target = CRS.from_user_input(options.crs) if options.crs else CRS.from_wkt(first["crs_wkt"])
    parts = [PartFile(p.stem, out / "parts" / f"{p.stem}.gpkg", states[p.stem]["crs_wkt"],
                      tuple(states[p.stem]["bounds"]), states[p.stem]["pixel_size"]) for p in committed]
    layer = merge_parts(parts, target, regularize=options.regularize, simplify_m=options.simplify_m,
                        min_area_m2=options.min_area_m2)
    write_layer(layer, out / "buildings.gpkg", target)
    quicklook = _quicklook(out / "quicklook.png", parts, layer, target)
    megapixels = sum(s["width"] * s["height"] for s in (states[p.stem] for p in predicted)) / 1e6
    summary = {"files": len(paths), "committed": len(committed), "skipped_committed_earlier": skipped,
               "failed": failed, "km2": round(sum(states[p.stem]["area_km2"] for p in committed), 6),
               "buildings": len(layer.geometries), "joined_across_files": layer.joined_across_files,
               "target_crs": target.to_string(), "engine": engine,
               "windows": sum(len(states[p.stem]["windows"]) for p in predicted),
               "predict_seconds": round(predict_seconds, 3),
               "first_window_seconds": round(first_window, 3) if first_window is not None else None,
               "wall_seconds": round(time.perf_counter() - started, 3),
               "images_per_s": round(len(predicted) / predict_seconds, 4) if predicted and predict_seconds else None,
               "megapixels_per_s": round(megapixels / predict_seconds, 4) if predicted and predict_seconds else None,
               "workers": len(workers), "peak_rss_mb_per_worker": sorted(round(v, 1) for v in workers.values()),
               "layer": "buildings.gpkg", "quicklook": quicklook.name,
               "geoparquet": "not written: the GDAL under pyogrio has no Parquet driver"}
    if _has_parquet():
        write_layer(layer, out / "buildings.parquet", target, driver="Parquet")
        summary["geoparquet"] = "buildings.parquet"
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    say(f"{summary['committed']} of {summary['files']} file(s), {summary['km2']:.4f} km², {summary['buildings']} "
        f"buildings ({layer.joined_across_files} joined across files) in {target.to_string()} -> {out / 'buildings.gpkg'}")
    return MapResult(out, summary, failed)


def _has_parquet() -> bool:
    import pyogrio

    return "Parquet" in pyogrio.list_drivers(write=True)


def _quicklook(path: Path, parts, layer, target, side: int = 1024) -> Path:
    """The whole extent in the target CRS: file footprints grey, buildings red (rasterised)."""
    import cv2
    from rasterio.features import rasterize
    from rasterio.transform import from_bounds
    from shapely.geometry import box

    from buildings.mapping.merge import _reproject

    footprints = [_reproject([box(*p.bounds)], p.crs_wkt, target)[0] for p in parts]
    minx = min(f.bounds[0] for f in footprints)
    miny = min(f.bounds[1] for f in footprints)
    maxx = max(f.bounds[2] for f in footprints)
    maxy = max(f.bounds[3] for f in footprints)
    scale = side / max(maxx - minx, maxy - miny, 1e-12)
    width, height = max(1, round((maxx - minx) * scale)), max(1, round((maxy - miny) * scale))
    transform = from_bounds(minx, miny, maxx, maxy, width, height)
    image = np.full((height, width, 3), 255, np.uint8)
    covered = rasterize([(f, 1) for f in footprints], out_shape=(height, width), transform=transform)
    image[covered > 0] = (225, 225, 225)
    edges = rasterize([(f.boundary, 1) for f in footprints], out_shape=(height, width), transform=transform)
    image[edges > 0] = (150, 150, 150)
    if layer.geometries:
        buildings = rasterize([(g, 1) for g in layer.geometries], out_shape=(height, width), transform=transform,
                              all_touched=True)
        image[buildings > 0] = (40, 40, 220)  # BGR: red
    with atomic_path(path, suffix=".png") as temporary:
        if not cv2.imwrite(str(temporary), image):
            raise OutputError(f"{path}: cannot write the quick-look PNG")
    return path
