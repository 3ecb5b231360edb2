"""Faults a run meets in the field: kill -9 at any instant (fit, predict) and operating-system
errors while writing (a full disk, simulated by a file-size limit the kernel enforces: writes past
it fail with EFBIG, "File too large"). Each must end in one clear line or a clean resume, and leave
nothing half-written. Processes run the real command line in subprocesses."""

import json
import os
import random
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import ROOT, damage_jpeg, error_line, rezip, run_limited, score_back

from buildings.files import TEMP_MARK

CHILD = str(ROOT / "tests" / "scripts" / "fault_child.py")
FIT = ["fit", "--model", "unet", "--model-option", "filters=4", "--model-option", "depth=2", "--batch-size", "2",
       "--image-size", "64", "--aug", "light"]


def temporaries(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if TEMP_MARK in p.name]


def child_env(writes: Path, pause: float) -> dict:
    return {**os.environ, "KERAS_BACKEND": "torch", "BUILDINGS_TEST_WRITES": str(writes),
            "BUILDINGS_TEST_PAUSE": str(pause)}


def announced(writes: Path) -> list[str]:
    return writes.read_text().splitlines() if writes.exists() else []


@pytest.mark.slow
def test_fit_killed_at_20_random_moments_resumes_every_time(synth_dataset, tmp_path):
    """20 kills: at random times (import, data, training, validation) and during writes of the
    history, checkpoints, backup weights and backup state, some with the temporary torn to a
    random length, as a crash mid-write leaves it. Every restart resumes, and the finished run has
    every epoch exactly once, loadable checkpoints and no temporaries."""
    rng = random.Random(20)
    run, writes, epochs = tmp_path / "run", tmp_path / "writes.log", 24
    start = [sys.executable, CHILD, *FIT, "--data", str(synth_dataset), "--epochs", str(epochs), "--run-dir", str(run)]
    kills, launches = [], 0
    while len(kills) < 20:
        writes.unlink(missing_ok=True)
        resume = (run / "config.json").exists()
        command = [sys.executable, CHILD, "fit", "--resume", str(run)] if resume else start
        process = subprocess.Popen(command, cwd=ROOT, env=child_env(writes, 0.15), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        launches += 1
        if rng.random() < 0.7:  # during the k-th write of one kind of file in this process
            kind = rng.choice(["config.json", "history.csv", "last.keras", "weights.h5", "state.json"])
            if kind == "config.json" and not resume:
                kind = "history.csv"  # a first launch writes config.json before anything can be killed
            k = 1 if kind == "config.json" else rng.randint(1, 2)

            def hits(kind=kind):
                return [path for path in announced(writes) if kind in Path(path).name]

            while process.poll() is None and len(hits()) < k:
                time.sleep(0.005)
            target = hits()[k - 1] if len(hits()) >= k else None
        else:  # 8 s: past the import, the data, the first epoch's training and validation
            deadline = time.time() + rng.uniform(0.5, 8.0)
            while process.poll() is None and time.time() < deadline:
                time.sleep(0.01)
            target = None
        assert process.poll() is None, f"launch {launches} ended before its kill: {process.stderr.read().decode()[-3000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stderr.close()
        torn = None
        if target is not None and Path(target).exists() and rng.random() < 0.5:
            torn = rng.randrange(Path(target).stat().st_size)  # as if the kernel had kept only part of it
            with open(target, "r+b") as handle:
                handle.truncate(torn)
        kills.append({"resume": resume, "write": Path(target).name if target else None, "torn": torn})

    final = subprocess.run([sys.executable, CHILD, "fit", "--resume", str(run)], cwd=ROOT,
                           env=child_env(writes, 0), capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == list(range(1, epochs + 1))  # every epoch exactly once
    state = json.loads((run / "backup" / "state.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert state["epoch"] == summary["epochs_total"] == epochs
    assert summary["best_val_contest_dice"] == pytest.approx(history["val_contest_dice"].max())
    assert state["best"] == pytest.approx(history["val_contest_dice"].max())
    check = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "models.py"), "load", str(run / "best.keras"),
                            str(run / "last.keras")], cwd=ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    assert temporaries(run) == []
    hit = " ".join(k["write"] or "" for k in kills)
    for kind in ("config.json", "history.csv", "last.keras", "weights.h5", "state.json"):
        assert kind in hit, f"no kill landed while writing {kind}: {kills}"
    assert sum(k["torn"] is not None for k in kills) >= 3 and sum(k["write"] is None for k in kills) >= 3
    assert sum(k["resume"] for k in kills) >= 15  # most kills hit a run that was itself resumed
    print(json.dumps(kills))


def tiny_checkpoint(path: Path, num_classes: int = 1) -> Path:
    subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "models.py"), "build", str(path), str(num_classes)],
                   cwd=ROOT, check=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny.keras")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(24):
        cv2.imwrite(str(folder / f"img{i:02d}.jpg"), rng.integers(0, 256, (256, 256, 3), dtype=np.uint8))
    return folder


@pytest.mark.slow
def test_killed_predict_leaves_no_output_and_the_next_run_cleans_up(checkpoint, image_folder, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, CHILD, "predict", "--checkpoint", str(checkpoint), "--images", str(image_folder),
               "--out", str(out / "sub.csv"), "--save-masks", str(out / "masks"), "--batch-size", "2"]
    process = subprocess.Popen(command, cwd=ROOT, env=child_env(tmp_path / "w.log", 0), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while process.poll() is None and time.time() < deadline:
        staged = [p for p in temporaries(out) if p.is_dir()]
        if staged and len(list(staged[0].iterdir())) >= 4:  # some masks written, more to come
            break
        time.sleep(0.01)
    assert process.poll() is None, "predict ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "sub.csv").exists() and not (out / "masks").exists()  # nothing that looks like output
    assert temporaries(out), "the killed run's staging folder should be there for the next run to clean"
    again = subprocess.run(command, cwd=ROOT, env=child_env(tmp_path / "w.log", 0), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(list((out / "masks").glob("*.png"))) == 24
    assert score_back(out / "sub.csv", (256, 256))["n_images"] == 24
    assert temporaries(out) == []  # the stale staging folder of the killed run is gone too


@pytest.mark.slow
@pytest.mark.parametrize("what", ["csv", "masks", "overlays", "result-zip"])
def test_a_full_disk_during_predict_is_one_line_and_leaves_nothing(what, checkpoint, image_folder, tmp_path):
    out = tmp_path / "out"
    target = {"csv": ["--out", str(out / "sub.csv")], "masks": ["--save-masks", str(out / "masks")],
              "overlays": ["--save-overlays", str(out / "overlays")],
              "result-zip": ["--out", str(out / "result.zip"), "--format", "png-zip"]}[what]
    limit = {"csv": 60, "masks": 100, "overlays": 20_000, "result-zip": 200}[what]
    result = run_limited(["predict", "--checkpoint", str(checkpoint), "--images", str(image_folder), *target], limit)
    line = error_line(result)
    assert "File too large" in line and str(out) in line, line
    assert not out.exists() or list(out.iterdir()) == []


@pytest.mark.slow
def test_a_full_disk_during_fit_and_data_build_is_one_line(synth_contest, synth_dataset, tmp_path):
    result = run_limited(["data", "build", "--manual-dir", str(synth_contest), "--data-dir", str(tmp_path / "tfds")],
                         100_000)
    line = error_line(result)
    assert "tianchi_buildings/val5/1.0.0" in line and "cannot write the dataset: File too large" in line, line
    assert not (tmp_path / "tfds").exists() or temporaries(tmp_path / "tfds") == []
    result = run_limited([*FIT, "--data", str(synth_dataset), "--epochs", "2", "--run-dir", str(tmp_path / "run")],
                         30_000)
    line = error_line(result)
    assert "last.keras: File too large" in line, line
    assert temporaries(tmp_path / "run") == [] and not (tmp_path / "run" / "backup" / "state.json").exists()


@pytest.mark.slow
def test_overwrite_with_bad_input_keeps_the_previous_dataset(synth_contest, tmp_path):
    import shutil

    from buildings.data.splits import open_split
    from buildings.data.tfds.tianchi_buildings import build_dataset
    from buildings.errors import DataError

    good = build_dataset(synth_contest, tmp_path / "tfds", config="val20")
    before = sorted((p.name, p.stat().st_size) for p in good.iterdir())
    broken = tmp_path / "broken"
    shutil.copytree(synth_contest, broken)
    last = sorted(n for n in zipfile.ZipFile(broken / "train.zip").namelist() if n.endswith(".jpg"))[-1]
    rezip(synth_contest / "train.zip", broken / "train.zip",
          lambda name, data: damage_jpeg(data) if name == last else data)  # found mid-generation
    with pytest.raises(DataError, match=f"train.zip:{last}: corrupt JPEG"):
        build_dataset(broken, tmp_path / "tfds", config="val20", overwrite=True)
    assert sorted((p.name, p.stat().st_size) for p in good.iterdir()) == before
    assert len(open_split(good, "train")) > 0 and temporaries(tmp_path / "tfds") == []
