"""Where a mapping job's windows are predicted: in this process, one file after another
(``local``), or on Ray Data (``ray``): windows as rows -> a pool of model actors -> results streamed
back to the writers in this process.

Both engines compute each block with ``buildings.geo.predict.predict_block`` (the block, its halo,
the predictor's own windows and the rule's ``block_mask``), the code ``buildings predict --images``
runs, so a file's mask is the single-raster path's, bit for bit, whichever engine and however many
actors. Ray Data may hand results back in any order and, after a worker died, more than once: the
writers take each (file, block) once and in row-major order (``FileWriter``).

An actor is one :class:`WindowModel`: it builds the predictor from a :class:`PredictorSpec` once,
keeps the rasters it reads open, and answers each window with its mask and probabilities, or the
one-line reason it could not (an unreadable block): that file fails, the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from buildings.geo.predict import Block

__all__ = ["FAULT_ENV", "PredictorSpec", "WindowModel", "WindowResult", "run_local", "run_ray"]

# Test hook, documented: "<marker file>:<stem>:<i>:<j>" makes the worker that predicts that window exit
# once (the marker records that it did), as a killed actor would; tests/mapping checks the retry.
FAULT_ENV = "BUILDINGS_MAP_FAULT"


@dataclass(frozen=True)
class PredictorSpec:
    """What an actor needs to build the predictor: checkpoints, Predictor options, the rule."""

    checkpoints: tuple[str, ...]
    options: dict = field(default_factory=dict)  # tta, weights, vote, tile, overlap, batch_size
    rule: object = None

    def build(self):
        from buildings.inference import Predictor

        predictor = Predictor.from_checkpoints(list(self.checkpoints), rule=self.rule, **self.options)
        if not predictor.task.binary:
            from buildings.errors import ConfigError

            raise ConfigError("buildings map is for building (binary) models")
        return predictor

    @property
    def overlap(self) -> int:
        return int(self.options.get("overlap", 128))


@dataclass
class WindowResult:
    stem: str
    index: tuple[int, int]
    mask: np.ndarray | None = None
    probs: np.ndarray | None = None
    error: str | None = None
    worker: int = 0  # the pid of the process that predicted it
    peak_rss_mb: float = 0.0  # that process's peak resident memory so far


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _block_row(stem: str, path: str, bands, block: Block) -> dict:
    return {"stem": stem, "path": path, "bands": list(bands) if bands else [], "i": block.index[0],
            "j": block.index[1], "row": block.row, "col": block.col, "height": block.height, "width": block.width,
            "top": block.top, "left": block.left, "bottom": block.bottom, "right": block.right,
            "open": [bool(e) for e in block.open_edges]}


def _block_of(row) -> Block:
    return Block((int(row["i"]), int(row["j"])), *(int(row[k]) for k in ("row", "col", "height", "width", "top",
                                                                         "left", "bottom", "right")),
                 tuple(bool(e) for e in row["open"]))


def _maybe_fail(stem: str, index: tuple[int, int]) -> None:
    hook = os.environ.get(FAULT_ENV)
    if not hook:
        return
    marker, want_stem, i, j = hook.rsplit(":", 3)
    if (want_stem, int(i), int(j)) == (stem, *index) and not Path(marker).exists():
        Path(marker).write_text(f"{os.getpid()}\n")
        os._exit(1)  # as a killed worker: no clean-up, no exception


class WindowModel:
    """One model actor (Ray Data ``map_batches`` class, or the local engine's single instance)."""

    def __init__(self, spec: PredictorSpec, threads: int | None = None):
        if threads:  # N actors on a CPU share its cores: torch's default (every core each) oversubscribes
            import torch

            torch.set_num_threads(threads)
        self.predictor = spec.build()
        self.rasters: dict[tuple[str, tuple], object] = {}

    def _raster(self, path: str, bands):
        from buildings.geo.raster import GeoRaster

        key = (path, tuple(bands) if bands else ())
        if key not in self.rasters:
            if len(self.rasters) >= 8:  # a few open at a time: windows of one file mostly come together
                self.rasters.pop(next(iter(self.rasters))).close()
            self.rasters[key] = GeoRaster.open(path, tuple(bands) if bands else None)
        return self.rasters[key]

    def predict(self, row) -> WindowResult:
        from buildings.errors import BuildingsError, one_line
        from buildings.geo.predict import predict_block

        block = _block_of(row)
        stem = str(row["stem"])
        _maybe_fail(stem, block.index)
        try:
            raster = self._raster(str(row["path"]), [int(b) for b in row["bands"]])
            mask, probs = predict_block(self.predictor, raster, block)
            result = WindowResult(stem, block.index, mask, probs)
        except (BuildingsError, OSError, ValueError, RuntimeError) as err:  # rasterio's errors are these kinds
            result = WindowResult(stem, block.index, error=one_line(f"{row['path']}: block {block.index}: {err}"))
        result.worker, result.peak_rss_mb = os.getpid(), _peak_rss_mb()
        return result

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch (numpy format) -> one output row per window; arrays as bytes plus shape, so
        windows of any size travel in one column."""
        out = {k: [] for k in ("stem", "i", "j", "height", "width", "mask", "probs", "error", "worker", "rss")}
        for n in range(len(batch["stem"])):
            row = {k: batch[k][n] for k in batch}
            result = self.predict(row)
            out["stem"].append(result.stem)
            out["i"].append(result.index[0])
            out["j"].append(result.index[1])
            out["height"].append(int(row["height"]))
            out["width"].append(int(row["width"]))
            out["mask"].append(b"" if result.mask is None else result.mask.astype(np.uint8).tobytes())
            out["probs"].append(b"" if result.probs is None else result.probs.astype(np.float32).tobytes())
            out["error"].append(result.error or "")
            out["worker"].append(result.worker)
            out["rss"].append(result.peak_rss_mb)
        return {k: np.array(v, dtype=object) if k in ("mask", "probs", "stem", "error") else np.array(v)
                for k, v in out.items()}


def run_local(spec: PredictorSpec, plans, *, model: WindowModel | None = None) -> Iterator[WindowResult]:
    """Every window of ``plans`` (``job.FilePlan``), one file after another, in this process."""
    model = model or WindowModel(spec)
    for plan in plans:
        for block in plan.blocks:
            yield model.predict(_block_row(plan.stem, str(plan.path), plan.bands, block))


def run_ray(spec: PredictorSpec, plans, *, actors: int | None = None, address: str | None = None,
            say: Callable[[str], None] = print) -> Iterator[WindowResult]:
    """Every window of ``plans`` through Ray Data: ``actors`` model actors (default: one per GPU of
    the cluster, else one per 2 CPUs), each ``num_gpus=1`` on GPUs; actors that die are restarted
    and their windows retried (Ray's ``max_restarts`` / ``max_task_retries``)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
                 configure_logging=False)
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    count = actors or (gpus if gpus else max(1, cpus // 2))
    where = f"{gpus} GPU(s)" if gpus else f"{cpus} CPU(s)"
    say(f"ray: {count} model actor(s) on {where}{' at ' + address if address else ' (embedded)'}")
    rows = [_block_row(plan.stem, str(plan.path), plan.bands, block) for plan in plans for block in plan.blocks]
    if not rows:
        return
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.verbose_stats_logs = False
    data = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4 * count))
    remote = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // count)}
    threads = None if gpus else max(1, cpus // count)
    results = data.map_batches(WindowModel, fn_constructor_kwargs={"spec": spec, "threads": threads}, batch_size=1,
                               concurrency=count, max_restarts=-1, max_task_retries=-1, **remote)
    for batch in results.iter_batches(batch_size=1, batch_format="numpy"):
        for n in range(len(batch["stem"])):
            height, width = int(batch["height"][n]), int(batch["width"][n])
            error = str(batch["error"][n]) or None
            mask = probs = None
            if error is None:
                mask = np.frombuffer(batch["mask"][n], np.uint8).reshape(height, width)
                probs = np.frombuffer(batch["probs"][n], np.float32).reshape(height, width)
            yield WindowResult(str(batch["stem"][n]), (int(batch["i"][n]), int(batch["j"][n])), mask, probs, error,
                               int(batch["worker"][n]), float(batch["rss"][n]))
