"""Inference backends: what computes probabilities for a batch of uint8 windows, behind one protocol.

:class:`InferenceBackend` is what :class:`~buildings.inference.Predictor` talks to:
``probabilities(windows, tta)`` (uint8 RGB (B, H, W, 3) → float32 (B, H, W, C)), ``num_classes``,
``name``, ``activation_profile`` and ``memory_budget`` (which size the batches) and ``describe``
(one line for logs). Two implement it:

* :class:`KerasBackend`: a Keras model; normalisation, the TTA views, the activation and the TTA
  mean run on the device (``device_model.ProbabilityModel``), only probabilities come back;
* :class:`OnnxBackend`: a file written by ``buildings export``, run by onnxruntime without Keras;
  the same normalisation (``preprocessing.normalise``), views (``tta``) and activation
  (``Task.probabilities``) in NumPy around ``InferenceSession.run``.

Both call the same three functions, so the two paths cannot drift apart. Another runtime is one
more subclass. :func:`load_checkpoints` opens ``.keras`` and ``.onnx`` files as backends.

Each is checked against the model contract when it is opened, with a probe forward on a small
image (:data:`PROBE` pixels a side): height and width free (multiples of the stride), the output
at the input's size, as many channels as it declares. A model that breaks it is refused in one
line naming the file and the mismatch, before anything is predicted.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from buildings.contract import STRIDE
from buildings.errors import CheckpointError, missing_extra, require
from buildings.task import Task

__all__ = ["PROBE", "InferenceBackend", "KerasBackend", "OnnxBackend", "as_backend", "check_checkpoint_file",
           "load_checkpoints"]

PROBE = 2 * STRIDE  # side of the probe image


def _check_answer(source, answer_shape, channels: int, what: str = "channels") -> None:
    """The probe's answer must be (1, PROBE, PROBE, channels)."""
    expected = (1, PROBE, PROBE, channels)
    if tuple(answer_shape) != expected:
        raise CheckpointError(f"{source}: not a segmentation model of this package's contract: for a {PROBE}x{PROBE} "
                              f"image it answers {tuple(answer_shape)}, expected {expected} (logits at the input's "
                              f"size, {channels} {what})")


class InferenceBackend:
    """The protocol (see the module docstring); subclasses set ``name`` and ``task``."""

    name: str
    task: Task

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    def probabilities(self, windows: np.ndarray, tta: str = "none") -> np.ndarray:
        raise NotImplementedError

    def activation_profile(self, height: int, width: int) -> tuple[int, int]:
        """(peak live bytes, largest tensor's elements) of one ``height`` x ``width`` image."""
        raise NotImplementedError

    def memory_budget(self) -> int:
        """Bytes a batch may use where this backend computes."""
        from buildings.runtime.device import memory_budget

        return memory_budget(keras_models=False)

    def describe(self) -> str:
        raise NotImplementedError


class KerasBackend(InferenceBackend):
    """A Keras segmentation model (logits out), computing on the active Keras backend's device."""

    def __init__(self, model, source=None):
        shape, inputs = model.output_shape, model.input_shape
        if not (isinstance(shape, tuple) and len(shape) == 4 and isinstance(inputs, tuple) and len(inputs) == 4
                and inputs[-1] == 3):
            raise CheckpointError(f"{source or model.name}: not a segmentation model (input {inputs}, output {shape})")
        if inputs[1] is not None or inputs[2] is not None:
            raise CheckpointError(f"{source or model.name}: takes only {inputs[1]}x{inputs[2]} images; a model here "
                                  f"takes any height and width that are multiples of {STRIDE}")
        if not isinstance(shape[-1], int) or not 1 <= shape[-1] <= 255:
            raise CheckpointError(f"{source or model.name}: {shape[-1]} output channels; a model here has 1..255")
        self.model, self.name, self.task = model, model.name, Task(shape[-1])
        self._device_models: dict[str, object] = {}
        import keras

        answer = model(np.zeros((1, PROBE, PROBE, 3), np.float32), training=False)
        _check_answer(source or model.name, keras.ops.shape(answer), self.num_classes)

    def probabilities(self, windows: np.ndarray, tta: str = "none") -> np.ndarray:
        if tta not in self._device_models:
            from buildings.inference.device_model import ProbabilityModel

            self._device_models[tta] = ProbabilityModel(self.model, tta)
        return np.asarray(self._device_models[tta].predict_on_batch(np.ascontiguousarray(windows)), np.float32)

    def activation_profile(self, height: int, width: int) -> tuple[int, int]:
        from buildings.runtime.graph_memory import activation_profile

        return activation_profile(self.model, height, width)

    def memory_budget(self) -> int:
        from buildings.runtime.device import memory_budget

        return memory_budget(keras_models=True)

    def describe(self) -> str:
        import keras

        from buildings.runtime.device import describe_device

        return f"{keras.backend.backend()} on {describe_device()}"


class OnnxBackend(InferenceBackend):
    """An ONNX file written by ``buildings export``: float32 NHWC normalised images in, logits out."""

    def __init__(self, path):
        from buildings.formats.onnx_metadata import decode

        try:
            import onnxruntime
        except ImportError:
            raise CheckpointError(missing_extra(f"{path}: running an ONNX model", "onnxruntime", "deploy")) from None
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in onnxruntime.get_available_providers()]
            self.session = onnxruntime.InferenceSession(str(path), providers=providers)
        except Exception as err:  # onnxruntime raises its own types for a file that is not a model
            raise CheckpointError(f"{path}: an ONNX file that does not load ({type(err).__name__}: "
                                  f"{' '.join(str(err).split())[:200]})") from None
        meta = decode(self.session.get_modelmeta().custom_metadata_map, path)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[-1] != 3:
            raise CheckpointError(f"{path}: not a segmentation model (inputs {[i.shape for i in inputs]})")
        if inputs[0].type != "tensor(float)":
            raise CheckpointError(f"{path}: its input is {inputs[0].type}; `buildings export` writes float32 "
                                  "normalised images in")
        if any(isinstance(side, int) for side in inputs[0].shape[1:3]):
            raise CheckpointError(f"{path}: takes only {inputs[0].shape[1]}x{inputs[0].shape[2]} images; height and "
                                  f"width must be dynamic (any multiple of {STRIDE}), as `buildings export` writes them")
        self.task = Task(meta["num_classes"])
        self.input_name = inputs[0].name
        self.name = meta["model"] or path.stem
        self.path = path
        self._peak, self._largest = meta["peak_bytes_per_pixel"], meta["largest_per_pixel"]
        try:
            answer = self.logits(np.zeros((1, PROBE, PROBE, 3), np.float32))
        except Exception as err:  # onnxruntime's own error types
            raise CheckpointError(f"{path}: fails on a {PROBE}x{PROBE} image ({type(err).__name__}: "
                                  f"{str(err)[:160]})") from None
        _check_answer(path, answer.shape, self.num_classes, "channels, as its metadata declares")

    def activation_profile(self, height: int, width: int) -> tuple[int, int]:
        return int(self._peak * height * width), int(self._largest * height * width)

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Logits (B, H, W, C) of float32 normalised images."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(images, np.float32)})[0]

    def probabilities(self, windows: np.ndarray, tta: str = "none") -> np.ndarray:
        from buildings import tta as views
        from buildings.preprocessing import normalise

        x = normalise(windows)
        chosen = views.views(tta)
        total = 0.0
        for view in chosen:
            logits = self.logits(views.apply(x, view))
            total = total + views.undo(self.task.probabilities(logits), view)
        return np.asarray(total / len(chosen), np.float32)

    def describe(self) -> str:
        return f"onnxruntime on {self.session.get_providers()[0]}"


def as_backend(model) -> InferenceBackend:
    """``model`` as a backend: a backend stays itself, a Keras model becomes a :class:`KerasBackend`."""
    return model if isinstance(model, InferenceBackend) else KerasBackend(model)


ZIP_SIGNATURE = b"PK\x03\x04"  # a .keras file is a zip archive


def check_checkpoint_file(path) -> Path:
    """``path`` if it can be a checkpoint: an existing file, a ``.keras`` zip or an ``.onnx`` file;
    one CheckpointError naming it otherwise (an ``.onnx`` one also when onnxruntime, which runs it,
    is not installed). Reads 4 bytes, imports nothing."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (.keras or .onnx)")
    suffix = path.suffix.lower()
    if suffix not in (".keras", ".onnx"):
        raise CheckpointError(f"{path}: not a checkpoint (a .keras file, or an .onnx one from `buildings export`)")
    with path.open("rb") as handle:
        head = handle.read(4)
    if suffix == ".keras" and head != ZIP_SIGNATURE:
        found = repr(head) if head else "empty"
        raise CheckpointError(f"{path}: not a Keras checkpoint (no zip signature: {found})")
    if suffix == ".onnx" and not head:
        raise CheckpointError(f"{path}: an empty file, not an ONNX model")
    if suffix == ".onnx":  # an ensemble's .keras members are not loaded first, nor a map's workers started
        require(f"{path}: running an ONNX model", "deploy", "onnxruntime", error=CheckpointError)
    return path


def load_checkpoints(paths: Sequence[str | os.PathLike]) -> list[InferenceBackend]:
    """Backends for ``.keras`` checkpoints (compile off; any backend wrote them) and ``.onnx`` files
    written by ``buildings export`` (run by onnxruntime; Keras is not imported for them); all must be
    segmentation models with the same number of output channels."""
    if not paths:
        raise CheckpointError("no checkpoint given")
    for path in paths:  # every file checked before anything heavy is imported or loaded
        check_checkpoint_file(path)
    backends = []
    for path in paths:
        if str(path).lower().endswith(".onnx"):
            backends.append(OnnxBackend(path))
            continue
        from buildings.models import load_model

        backends.append(KerasBackend(load_model(path, compile=False), source=path))
    channels = {b.num_classes for b in backends}
    if len(channels) > 1:
        raise CheckpointError(f"checkpoints disagree on the number of classes: {sorted(channels)}")
    return backends
