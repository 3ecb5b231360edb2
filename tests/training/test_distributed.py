"""Data-parallel training (buildings.training.distributed): the shards of a global batch, torch's DDP
under torchrun with gloo, jax's keras.distribution on 2 host devices, only rank 0 writing, a killed
rank, and the refusals. Every multi-process run here is 2 processes on this CPU."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import ROOT, free_port

from buildings.errors import ConfigError

SCRIPTS = ROOT / "tests" / "scripts"
TINY = ["--model", "unet", "--model-option", "filters=8", "--model-option", "depth=2", "--image-size", "64",
        "--aug", "light", "--workers", "1", "--eval-batch-size", "2"]


def _env(backend="torch", **extra):
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", **extra}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(extra)
    return env


def _buildings(*args, env, cwd, timeout=600, **kw):
    return subprocess.run([sys.executable, "-m", "buildings", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kw)


def _weights(path):
    import keras

    import buildings.models  # noqa: F401  (registers the layers the checkpoint holds)

    return keras.saving.load_model(path, compile=False).get_weights()


def _max_difference(a, b) -> float:
    assert len(a) == len(b)
    return max(float(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max()) for x, y in zip(a, b))


def _source(synth_dataset):
    from buildings.data.splits import open_split

    return open_split(synth_dataset, "train")


# -- the shards --------------------------------------------------------------------------------------

def test_two_shards_are_disjoint_and_together_are_the_global_batch_one_process_loads(synth_dataset):
    from buildings.data.pipeline import SegmentationBatches

    source = _source(synth_dataset)
    options = {"image_size": 32, "augment": "strong", "training": True, "seed": 4, "augment_on": "device"}
    whole = SegmentationBatches(source, 4, **options)
    shards = [SegmentationBatches(source, 2, shard=(rank, 2), **options) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == len(whole) >= 1
    for epoch in (0, 1, 5):
        for loader in (whole, *shards):
            loader.set_epoch(epoch)
        seen = []
        for index in range(len(whole)):
            (inputs, masks), parts = whole[index], [shard[index] for shard in shards]
            indices = [[int(s.order[p]) for p in s.positions(index)] for s in shards]
            assert not set(indices[0]) & set(indices[1])
            assert indices[0] + indices[1] == [int(whole.order[p]) for p in whole.positions(index)]
            seen += indices[0] + indices[1]
            for key in ("image", "augment"):  # the same crops and the same device augmentation, row for row
                np.testing.assert_array_equal(np.concatenate([p[0][key] for p in parts]), inputs[key])
            np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), masks)
        assert len(seen) == len(set(seen)) == len(whole) * 4  # an epoch covers what one process covers
    assert [int(i) for i in shards[0].order] != sorted(int(i) for i in shards[0].order)  # shuffled, not in order


# -- torch: torchrun, gloo ---------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_two_ranks_take_the_step_one_process_takes_on_the_global_batch(synth_dataset, tmp_path):
    script = [str(SCRIPTS / "ddp_steps.py"), str(synth_dataset), str(tmp_path)]
    one = subprocess.run([sys.executable, *script, "4", "3"], env=_env(), capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    two = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", *script, "4", "3"], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    single, double = (np.load(tmp_path / f"weights-{n}.npz") for n in (1, 2))
    assert _max_difference([single[k] for k in single], [double[k] for k in double]) < 1e-5
    # The comparison can fail: one process on half the global batch (what a rank would do alone) differs.
    (tmp_path / "alone").mkdir()
    alone = subprocess.run([sys.executable, script[0], script[1], str(tmp_path / "alone"), "2", "3"], env=_env(),
                           capture_output=True, text=True, timeout=300)
    assert alone.returncode == 0, alone.stderr[-3000:]
    half = np.load(tmp_path / "alone" / "weights-1.npz")
    assert _max_difference([half[k] for k in half], [double[k] for k in double]) > 1e-4
    shards = [json.loads((tmp_path / f"shards-2-{rank}.json").read_text()) for rank in (0, 1)]
    whole = json.loads((tmp_path / "shards-1-0.json").read_text())
    for epoch in ("0", "1"):
        ranks = [sum(shard[epoch], []) for shard in shards]
        assert not set(ranks[0]) & set(ranks[1])
        assert sorted(ranks[0] + ranks[1]) == sorted(sum(whole[epoch], []))
    assert shards[0]["0"] != shards[0]["1"]  # reshuffled every epoch


def _launch_two_ranks(args, cwds, port):
    """The two ranks of a job as torchrun starts them (its environment variables), each in its own folder."""
    processes, logs = [], []
    for rank, cwd in enumerate(cwds):
        env = _env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        logs.append([tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")])  # pipes could fill and block
        processes.append(subprocess.Popen([sys.executable, "-m", "buildings", *args], env=env, cwd=cwd,
                                          stdout=logs[-1][0], stderr=logs[-1][1], text=True))
    results = []
    for process, files in zip(processes, logs):
        code = process.wait(timeout=600)
        texts = []
        for file in files:
            file.seek(0)
            texts.append(file.read())
            file.close()
        results.append((code, *texts))
    return results


@pytest.mark.slow
def test_only_rank_0_writes_and_its_validation_score_is_one_process_score(synth_dataset, tmp_path):
    chief, other = tmp_path / "rank0", tmp_path / "rank1"
    chief.mkdir(), other.mkdir()
    args = ["fit", *TINY, "--data", str(synth_dataset), "--batch-size", "2", "--epochs", "2", "--run-dir", "run"]
    results = _launch_two_ranks(args, [chief, other], free_port())
    for code, _, err in results:
        assert code == 0, err[-3000:]
    assert list(other.iterdir()) == []  # rank 1 had the same relative --run-dir: it wrote nothing
    run = chief / "run"
    assert {"config.json", "history.csv", "last.keras", "best.keras", "summary.json"} <= {p.name for p in run.iterdir()}
    assert "2 devices (torch.distributed, 2 processes) x 2 = 4 images a step" in results[0][1]
    assert results[1][1] == ""  # rank 1 prints nothing
    record = json.loads((run / "config.json").read_text())["replicas"]
    assert (record["devices"], record["batch_size_per_device"], record["global_batch_size"]) == (2, 2, 4)

    import keras

    from buildings.config import FitConfig
    from buildings.data.pipeline import SegmentationBatches
    from buildings.data.splits import open_split
    from buildings.training.objective import TrainingObjective
    from buildings.training.training_model import TrainingModel

    validation = open_split(synth_dataset, "validation")
    trainer = TrainingModel(keras.saving.load_model(run / "last.keras", compile=False))
    TrainingObjective(FitConfig(loss="bce_dice", class_weights=None), validation.task, 1).compile(trainer)
    scores = trainer.evaluate(SegmentationBatches(validation, 2), return_dict=True, verbose=0)
    last = [line.split(",") for line in (run / "history.csv").read_text().splitlines()]
    logged = float(last[-1][last[0].index("val_contest_dice")])
    assert scores["contest_dice"] == pytest.approx(logged, abs=1e-6)


def _rank_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of rank ``rank`` among the launcher's descendants (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if f"RANK={rank}".encode() in environ and b"WORLD_SIZE=2" in environ and ppid == launcher_pid:
            return int(entry.name)
    return None


@pytest.mark.slow
def test_killed_rank_ends_the_job_in_one_line_and_resume_matches_an_uninterrupted_run(synth_dataset, tmp_path):
    args = ["fit", *TINY, "--data", str(synth_dataset), "--batch-size", "2", "--epochs", "3", "--devices", "2"]
    whole = _buildings(*args, "--run-dir", str(tmp_path / "whole"), env=_env(), cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]

    run = tmp_path / "killed"
    job = subprocess.Popen([sys.executable, "-m", "buildings", *args, "--run-dir", str(run)], env=_env(),
                           cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    committed_marker = run / "backup" / "state.json"  # epoch 1 finished (history.csv is written before it)
    while not committed_marker.exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into epoch 2
    victim = _rank_pid(job.pid, 1)
    assert victim is not None and job.poll() is None
    os.kill(victim, signal.SIGKILL)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("rank 1 was killed by SIGKILL"), err[-2000:]
    assert f"buildings fit --resume {run} --devices 2" in lines[-1]
    assert "Traceback" not in err and sum("rank 1" in line for line in lines) == 1
    committed = json.loads((run / "backup" / "state.json").read_text())["epoch"]
    assert 1 <= committed < 3

    resumed = _buildings("fit", "--resume", str(run), "--devices", "2", env=_env(), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epochs {committed + 1}..3 of 3" in resumed.stdout
    assert _max_difference(_weights(run / "last.keras"), _weights(tmp_path / "whole" / "last.keras")) < 1e-6


# -- jax: keras.distribution -------------------------------------------------------------------------

@pytest.mark.slow
def test_jax_on_two_host_devices_matches_one_device_on_the_same_global_batch(synth_dataset, tmp_path):
    pytest.importorskip("jax")
    env = _env("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    common = ["fit", *TINY, "--data", str(synth_dataset), "--epochs", "1", "--steps-per-epoch", "3"]
    one = _buildings(*common, "--batch-size", "4", "--run-dir", "one", env=env, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _buildings(*common, "--batch-size", "2", "--devices", "2", "--run-dir", "two", env=env, cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 devices (keras.distribution DataParallel, 1 process(es)) x 2 = 4 images a step" in two.stdout
    assert _max_difference(_weights(tmp_path / "one" / "last.keras"), _weights(tmp_path / "two" / "last.keras")) < 1e-5
    histories = [(tmp_path / name / "history.csv").read_text().splitlines() for name in ("one", "two")]
    columns = histories[0][0].split(",")
    for name in ("val_contest_dice", "val_loss", "loss"):  # validation, batches of 2 (the last one odd)
        values = [float(h[1].split(",")[columns.index(name)]) for h in histories]
        assert values[0] == pytest.approx(values[1], abs=1e-5), name
    too_many = _buildings(*common, "--devices", "3", "--run-dir", "three", env=env, cwd=tmp_path)
    assert too_many.returncode == 1 and "this process sees 2 jax device(s)" in too_many.stderr


# -- refusals and messages ---------------------------------------------------------------------------

def test_devices_that_cannot_be_honoured_are_refused_in_one_line(monkeypatch):
    from buildings.training.distributed import replicas_for

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="tensorflow backend does not distribute"):
        replicas_for(2, "tensorflow")
    with pytest.raises(ConfigError, match="torchrun --nproc-per-node 2"):
        replicas_for(2, "torch")
    with pytest.raises(ConfigError, match="positive number or 'all'"):
        replicas_for("two", "torch")
    assert not replicas_for(None, "torch").distributed and not replicas_for(1, "tensorflow").distributed
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ConfigError, match="torchrun started 4 processes"):
        replicas_for(2, "torch")
    replicas = replicas_for(None, "torch")
    assert (replicas.rank, replicas.processes, replicas.chief, replicas.global_batch(8)) == (3, 4, False, 32)


def test_a_failed_job_names_the_rank_that_failed_first_not_those_stopped_after_it(tmp_path):
    from buildings.training.distributed import LOST_PEER_EXIT, describe_failure

    failures = {0: SimpleNamespace(exitcode=-signal.SIGTERM, timestamp=10),
                1: SimpleNamespace(exitcode=-signal.SIGKILL, timestamp=10),
                2: SimpleNamespace(exitcode=LOST_PEER_EXIT, timestamp=9)}
    (tmp_path / "config.json").write_text("{}")
    line = describe_failure(failures, str(tmp_path), 3)
    assert line.startswith("rank 1 was killed by SIGKILL; ranks [0, 2] were stopped")
    assert line.endswith(f"buildings fit --resume {tmp_path} --devices 3") and "\n" not in line
    assert "resumable" not in describe_failure({0: SimpleNamespace(exitcode=1, timestamp=1)}, None, 2)
