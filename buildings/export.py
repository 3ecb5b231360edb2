"""``buildings export``: a checkpoint as a file other runtimes load (ONNX, TF SavedModel, PyTorch
``torch.export``), so a model deploys without Keras.

Every format takes float32 images (B, H, W, 3) normalised with the ImageNet mean and std (what the
models were trained on) and returns logits (B, H, W, C); batch, height and width stay dynamic
(height and width multiples of 32). The ONNX file carries what a runtime needs beyond the graph in
its metadata (``formats.onnx_metadata``): the number of classes, the normalisation, and the activation
memory per pixel that sizes prediction batches; ``buildings predict --checkpoint model.onnx`` runs
the whole predict path through onnxruntime with it (``inference.backends.OnnxBackend``).

ONNX on the torch backend calls PyTorch's TorchScript exporter directly, as Keras 3.15's
``model.export(format="onnx")`` does for dynamic shapes, with one difference: Keras traces with
every dynamic dimension set to 1, a 1x1 image that no U-Net can pool (MaxPooling fails); here the
trace uses a 256x256 image and the dimensions are declared dynamic. Other formats and backends go
through ``model.export`` unchanged. Torch exports trace Keras's own code, never the package's
speed-ups (``runtime.torch_speedups.suspended``), whatever the calling process installed before.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

from buildings.errors import ConfigError, OutputError, require
from buildings.files import atomic_dir, atomic_path

__all__ = ["FORMATS", "export_checkpoint"]

FORMATS = {"onnx": ".onnx", "saved_model": "", "torch": ".pt2"}
SAMPLE = 256  # side of the traced image; any multiple of 32 works at run time
ONNX_OPSET = 17


@contextlib.contextmanager
def _quiet_tracer():
    """The TorchScript exporter's warnings that say nothing about this export, silenced:

    * ``TracerWarning`` "Converting a tensor to a Python integer/boolean might cause the trace to be
      incorrect": Keras's torch backend reads shapes and compares them in Python (a kernel's channel
      check, "same" padding, a resize's size), so the trace keeps those values as constants. For
      these models they are the channel counts and the layer's own settings, the same at every image
      size; the height and width are declared dynamic and stay so. The export test checks exactly
      what the warning fears: the ONNX logits match Keras's on sizes other than the traced one
      (tests/deploy/test_export.py).
    * ``UserWarning`` "Constant folding - Only steps=1 can be constant folded": an optimisation the
      exporter skips for a Slice whose step is not 1 (DeepLabV3+ has one); the graph computes the
      same without it.

    Any other warning still shows."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"Constant folding - Only steps=1 can be constant folded",
                                category=UserWarning)
        yield


def _onnx_torch(model, path: Path) -> None:
    import torch

    sample = torch.zeros((1, SAMPLE, SAMPLE, 3), dtype=torch.float32)
    model.eval()
    dynamic = {0: "batch", 1: "height", 2: "width"}
    # Weights of nested sub-models (the `encoder`) reach the tracer as tensors rather than registered
    # parameters; ones that require grad cannot become graph constants, so none may while tracing.
    tensors = [v.value for v in model.weights if isinstance(v.value, torch.Tensor)]
    grads = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(False)
        with torch.no_grad(), _quiet_tracer():
            torch.onnx.export(model, (sample,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": dynamic, "logits": dynamic}, opset_version=ONNX_OPSET,
                              dynamo=False)
    finally:
        for t, grad in zip(tensors, grads, strict=True):
            t.requires_grad_(grad)


def _add_metadata(path: Path, values: dict) -> None:
    import onnx

    from buildings.formats.onnx_metadata import encode

    proto = onnx.load(str(path))
    for key, value in encode(values).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def export_checkpoint(checkpoint, out, fmt: str = "onnx") -> Path:
    """Export the ``.keras`` ``checkpoint`` to ``out`` in ``fmt`` (onnx, saved_model, torch); the
    file (or SavedModel folder) appears only when complete."""
    if fmt not in FORMATS:
        raise ConfigError(f"export format must be one of {sorted(FORMATS)}, got {fmt!r}")
    out = Path(out)
    if FORMATS[fmt] and out.suffix != FORMATS[fmt]:
        raise ConfigError(f"{out}: a {fmt} export is written to a {FORMATS[fmt]} file")
    if fmt == "onnx":  # before Keras is imported or the checkpoint loaded
        require("--format onnx", "deploy", "onnx")
    import keras

    from buildings.runtime import torch_speedups

    backend = keras.backend.backend()
    if fmt == "torch" and backend != "torch":
        raise ConfigError("--format torch needs the torch backend (KERAS_BACKEND=torch, the default)")
    if fmt == "saved_model" and backend != "tensorflow":
        raise ConfigError("--format saved_model needs the tensorflow backend: run "
                          "KERAS_BACKEND=tensorflow buildings export ... (the checkpoint loads on any backend)")
    with torch_speedups.suspended():
        return _export(checkpoint, out, fmt, backend)


def _export(checkpoint, out: Path, fmt: str, backend: str) -> Path:
    import keras

    from buildings.formats.onnx_metadata import INPUT
    from buildings.models import load_model
    from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD
    from buildings.runtime.graph_memory import activation_profile

    model = load_model(checkpoint, compile=False)
    classes = int(model.output_shape[-1])
    if fmt == "onnx":
        peak, largest = activation_profile(model, SAMPLE, SAMPLE)
        with atomic_path(out, suffix=".onnx") as temporary:
            if backend == "torch":
                _onnx_torch(model, temporary)
            else:
                spec = keras.InputSpec(shape=(None, None, None, 3), dtype="float32", name="image")
                model.export(str(temporary), format="onnx", verbose=False, input_signature=[spec])
            _add_metadata(temporary, {"num_classes": classes, "model": model.name, "input": INPUT,
                                      "mean": list(map(float, IMAGENET_MEAN)), "std": list(map(float, IMAGENET_STD)),
                                      "peak_bytes_per_pixel": peak / SAMPLE**2, "largest_per_pixel": largest / SAMPLE**2,
                                      "source": Path(checkpoint).name})
    elif fmt == "torch":
        import torch

        batch = torch.export.Dim("batch", min=1, max=1024)
        rows, cols = torch.export.Dim("rows", min=1, max=1024), torch.export.Dim("cols", min=1, max=1024)
        with atomic_path(out, suffix=".pt2") as temporary:
            model.export(str(temporary), format="torch", verbose=False,
                         input_signature=[keras.InputSpec(shape=(None, SAMPLE, SAMPLE, 3), dtype="float32")],
                         dynamic_shapes=({0: batch, 1: 32 * rows, 2: 32 * cols},))
    else:
        if out.exists() and not out.is_dir():
            raise OutputError(f"{out}: exists and is not a folder")
        with atomic_dir(out) as temporary:
            shutil.rmtree(temporary)
            spec = keras.InputSpec(shape=(None, None, None, 3), dtype="float32", name="image")
            model.export(str(temporary), format="tf_saved_model", verbose=False, input_signature=[spec])
    return out
