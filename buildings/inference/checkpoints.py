"""Loading checkpoints for prediction: ``.keras`` files of any backend, checked to be segmentation
models that agree on their number of classes. This is where inference starts, so it installs the
package's Keras patches (``buildings.runtime.install_patches``: speed-ups, intermediates freed)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from buildings.errors import CheckpointError

__all__ = ["load_checkpoints"]


def load_checkpoints(paths: Sequence[str | os.PathLike]) -> list:
    """Load ``.keras`` checkpoints (compile off) or ONNX files written by ``buildings export``
    (run by onnxruntime, Keras is not imported for them); all must map RGB images to per-pixel
    logits and give the same number of output channels."""
    if not paths:
        raise CheckpointError("no checkpoint given")
    models = []
    for path in paths:
        if str(path).lower().endswith(".onnx"):
            from buildings.inference.onnx_model import OnnxModel

            models.append(OnnxModel(path))
            continue
        from buildings.models import load_model
        from buildings.runtime import install_patches

        install_patches()
        model = load_model(path, compile=False)
        shape = model.output_shape
        if not (isinstance(shape, tuple) and len(shape) == 4 and len(model.input_shape) == 4
                and model.input_shape[-1] == 3):
            raise CheckpointError(f"{path}: not a segmentation model (input {model.input_shape}, output {shape})")
        models.append(model)
    channels = {m.output_shape[-1] for m in models}
    if len(channels) > 1:
        raise CheckpointError(f"checkpoints disagree on the number of classes: {sorted(channels)}")
    return models
