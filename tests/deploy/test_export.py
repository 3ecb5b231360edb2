"""``buildings export``: ONNX logits match Keras's for every model (max abs diff <= 1e-4, on image
sizes other than the traced one), ``buildings predict --checkpoint model.onnx`` runs the whole predict
path through onnxruntime without importing Keras and writes what the Keras checkpoint writes, and the
torch / SavedModel exports load back in their own runtimes."""

import importlib.util
import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
from helpers import ROOT

from buildings.errors import CheckpointError, ConfigError
from buildings.export import export_checkpoint
from buildings.models import build_model

onnxruntime = pytest.importorskip("onnxruntime", reason="the [deploy] extra (onnx, onnxruntime) is not installed")

MODELS = {
    "unet": {"filters": 4, "depth": 3},
    "attunet": {"filters": 4, "depth": 3, "decoder_attention": "cbam"},
    "deeplabv3plus": {"decoder_attention": "se"},
    "fcn": {},
    "unet-efficientnet_lite0": {"encoder": "efficientnet_lite0"},
}


def save(tmp_path, key: str, num_classes: int = 1):
    keras.utils.set_random_seed(0)
    name = key.split("-")[0]
    model = build_model(name, num_classes=num_classes, **MODELS[key])
    path = tmp_path / f"{key}.keras"
    model.save(path)
    return model, path


@pytest.mark.parametrize("key", list(MODELS))
def test_onnx_logits_match_keras_for_every_model(tmp_path, key):
    model, path = save(tmp_path, key, num_classes=1 if key != "fcn" else 3)
    onnx_path = export_checkpoint(path, tmp_path / f"{key}.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    for shape in [(2, 64, 96, 3), (1, 160, 128, 3)]:  # neither is the 256x256 of the trace
        x = rng.normal(size=shape).astype("float32")
        expected = keras.ops.convert_to_numpy(model(x, training=False))
        got = session.run(None, {"image": x})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4, (key, shape, float(np.abs(got - expected).max()))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the speed-ups exist on the torch backend only")
def test_onnx_export_after_the_speedups_are_installed_traces_keras_own_code(tmp_path):
    # torch's TorchScript exporter writes the fused BatchNorm's movedim(-1, 1) as an invalid
    # Transpose perm that onnxruntime refuses; a process that trained or predicted first has them on
    from buildings.runtime import install_patches, torch_speedups

    model, path = save(tmp_path, "fcn", num_classes=3)
    before = install_patches()
    if not any(torch_speedups.installed().values()):
        pytest.skip(f"the speed-ups are off here ({torch_speedups.unavailable_reason()})")
    onnx_path = export_checkpoint(path, tmp_path / "fcn.onnx", "onnx")
    assert torch_speedups.installed() == {"copies": before["copies"], "batch_norm": before["batch_norm"]}
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(1, 64, 64, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    assert np.abs(session.run(None, {"image": x})[0] - expected).max() <= 1e-4


def write_images(folder, n=3, size=(96, 128)):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        image = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
        cv2.rectangle(image, (10 + 5 * i, 20), (60, 70), (250, 250, 250), -1)
        cv2.imwrite(str(folder / f"tile{i}.png"), image)
    return folder


def test_predict_runs_an_onnx_model_without_keras_and_writes_what_keras_writes(tmp_path):
    _, path = save(tmp_path, "unet")
    onnx_path = export_checkpoint(path, tmp_path / "unet.onnx", "onnx")
    images = write_images(tmp_path / "images")
    probe = str(ROOT / "tests" / "scripts" / "imported_modules.py")  # runs the CLI, prints sys.modules
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    outputs = {}
    for checkpoint in (onnx_path, path):
        out = tmp_path / f"{checkpoint.suffix[1:]}.csv"
        done = subprocess.run([sys.executable, probe, "--cli", "predict", "--checkpoint", str(checkpoint), "--images",
                               str(images), "--tta", "flip", "--tile", "64", "--overlap", "16", "--threshold", "0.5",
                               "--out", str(out), "--save-masks", str(tmp_path / f"masks-{checkpoint.suffix[1:]}")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs[checkpoint.suffix] = (out, done.stderr, set(json.loads(done.stdout.splitlines()[-1])))
    _, onnx_log, onnx_modules = outputs[".onnx"]
    assert "keras" not in onnx_modules and "torch" not in onnx_modules, onnx_log[-1000:]
    assert "keras" in outputs[".keras"][2]  # the probe sees an import where there is one
    assert "onnxruntime on CPUExecutionProvider" in onnx_log
    # Tiled (96x128 in 64-pixel windows), flip TTA: the same masks within a few boundary pixels.
    for i in range(3):
        a = cv2.imread(str(tmp_path / "masks-onnx" / f"tile{i}.png"), cv2.IMREAD_GRAYSCALE)
        b = cv2.imread(str(tmp_path / "masks-keras" / f"tile{i}.png"), cv2.IMREAD_GRAYSCALE)
        assert a.shape == (96, 128) and (a != b).mean() < 0.001


def test_onnx_predictor_probabilities_match_the_keras_predictor(tmp_path):
    from buildings.inference import Predictor

    _, path = save(tmp_path, "attunet")
    onnx_path = export_checkpoint(path, tmp_path / "m.onnx", "onnx")
    image = np.random.default_rng(2).integers(0, 255, size=(200, 136, 3), dtype=np.uint8)
    options = dict(tta="d4", tile=96, overlap=32, batch_size=4)
    a = Predictor.from_checkpoints([onnx_path], **options).probabilities(image)
    b = Predictor.from_checkpoints([path], **options).probabilities(image)
    assert a.shape == b.shape == (200, 136, 1)
    assert np.abs(a - b).max() <= 1e-4


def test_torch_export_loads_with_torch_export_and_matches(tmp_path):
    import torch

    model, path = save(tmp_path, "unet")
    pt2 = export_checkpoint(path, tmp_path / "unet.pt2", "torch")
    program = torch.export.load(str(pt2)).module()
    x = np.random.default_rng(3).normal(size=(3, 96, 64, 3)).astype("float32")
    got = program(torch.from_numpy(x)).detach().numpy()
    assert np.abs(got - keras.ops.convert_to_numpy(model(x, training=False))).max() <= 1e-4


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="SavedModel export needs TensorFlow")
def test_saved_model_export_on_the_tensorflow_backend_serves_the_same_logits(tmp_path):
    model, path = save(tmp_path, "unet")
    x = np.random.default_rng(4).normal(size=(2, 64, 64, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "scripts" / "saved_model_serves.py"), str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "KERAS_BACKEND": "tensorflow"}, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert float(done.stdout.split("DIFF")[-1]) <= 1e-4


def test_export_prints_one_line_without_the_tracers_warnings(tmp_path):
    # PyTorch's TorchScript exporter warns (TracerWarning, "Constant folding") about Python-side
    # shape checks in Keras's torch backend: for these models they are constants at any size (the
    # logits test above checks other sizes), so `buildings export` silences them (export._quiet_tracer)
    # and says only what it wrote. DeepLabV3+ raises both kinds.
    _, path = save(tmp_path, "deeplabv3plus")
    done = subprocess.run([sys.executable, "-m", "buildings.cli", "export", "--checkpoint", str(path)],  # as a user runs it
                          cwd=ROOT, env={**os.environ, "KERAS_BACKEND": "torch"}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr, done.stderr[-2000:]
    assert (done.stdout + done.stderr).strip() == f"wrote {tmp_path / 'deeplabv3plus.onnx'} (onnx)"


def test_export_refusals_are_one_line(tmp_path):
    _, path = save(tmp_path, "fcn")
    with pytest.raises(ConfigError, match="onnx export is written to a .onnx file"):
        export_checkpoint(path, tmp_path / "x.bin", "onnx")
    with pytest.raises(ConfigError, match="tensorflow backend"):
        export_checkpoint(path, tmp_path / "x_saved_model", "saved_model")
    bare = tmp_path / "bare.onnx"
    import onnx

    exported = export_checkpoint(path, tmp_path / "full.onnx", "onnx")
    proto = onnx.load(str(exported))
    del proto.metadata_props[:]
    onnx.save(proto, str(bare))
    from buildings.inference.backends import OnnxBackend

    with pytest.raises(CheckpointError, match="bare.onnx: an ONNX model without the metadata"):
        OnnxBackend(bare)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="junk.onnx: an ONNX file that does not load"):
        OnnxBackend(tmp_path / "junk.onnx")
    assert not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*"))
