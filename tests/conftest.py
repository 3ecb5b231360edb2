"""Shared fixtures. Real-data tests read ../shared/data/barnarp beside the checkout and are skipped,
with the reason, when it is absent (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any test module imports keras
# A test's `buildings fit` runs the options it gives over the built-in defaults, the same on every
# machine (a CPU's recipe would add a pretrained encoder and a 20-minute cap to every tiny run; the
# subprocesses the tests start inherit it). The machine's defaults are tested where they are the
# subject, with the variable removed: tests/training/test_device_defaults.py.
os.environ["BUILDINGS_MACHINE_DEFAULTS"] = "0"
# Under pytest-xdist (the README's `-n auto`), each worker and the processes it starts compute on one
# thread: two workers of two threads each on a 2-core machine would oversubscribe it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")

from helpers import BARNARP  # noqa: E402

# -- a parallel run (pytest-xdist, the README's `-n auto`) --------------------------------------------
# Each file's tests run on one worker (they share module fixtures), except in SPLIT_FILES, whose tests
# are independent processes and spread one by one (their shared fixture, torch_checkpoints, keeps its
# two tests together). The files that take longest go first, so that none starts last on its own:
# HEAVY_FIRST, in the order of their measured seconds (RESULTS.md, the suite's timings). xdist's own
# `--dist loadgroup` marks do not group under pytest 9 (its node-id rewrite is not seen), hence a
# scheduler of our own for the default `-n` distribution.
SPLIT_FILES = {"tests/test_backends.py": {"test_checkpoint_trained_under_torch_loads_under_jax_and_tensorflow":
                                          "torch_checkpoints"}}
HEAVY_FIRST = ["tests/test_backends.py", "tests/test_gpu_run.py", "tests/training/test_faults.py",
               "tests/data/test_land_parcels.py", "tests/training/test_distributed.py", "tests/test_bench.py",
               "tests/mapping/test_map.py", "tests/test_demo.py"]


def _work_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or in SPLIT_FILES the test (or its named group)."""
    file, _, test = nodeid.partition("::")
    split = SPLIT_FILES.get(file)
    if split is None:
        return file
    return f"{file}::{split.get(test.split('[')[0], test)}"


@pytest.hookimpl(optionalhook=True)  # a run without xdist (`-p no:xdist`, or not installed)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":
        return None  # an explicit --dist keeps xdist's own
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _work_unit(nodeid)

    config.option.loadscopereorder = False  # keep HEAVY_FIRST's order, not the count of tests
    return FileScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """Under xdist, the heaviest files first (a serial run keeps the collection order)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        rank = {file: index for index, file in enumerate(HEAVY_FIRST)}
        items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


@pytest.fixture(scope="session")
def barnarp() -> Path:
    if not (BARNARP / "train_mask.csv.zip").is_file():
        pytest.skip(f"real barnarp data not found at {BARNARP}")
    return BARNARP


@pytest.fixture(scope="session")
def synth_contest(tmp_path_factory) -> Path:
    """A small synthetic contest download (9 train + 3 test tiles), made by the project itself."""
    from buildings.data.synth import write_synthetic_contest

    out = tmp_path_factory.mktemp("synth_contest")
    write_synthetic_contest(out, n=12, seed=3)
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_contest, tmp_path_factory) -> Path:
    """The synthetic download built as tianchi_buildings/val20 (array_record); its version folder."""
    from buildings.data.tfds.tianchi_buildings import build_dataset

    return build_dataset(synth_contest, tmp_path_factory.mktemp("tfds"), config="val20")


