"""Faster Keras-on-torch for convolutional models: two substitutions in Keras's torch backend.

Measured on this package's U-Net (``experiments/native_torch_unet.py``, RESULTS.md), Keras 3.15 on
torch spends more time outside the convolutions than in them:

1. **Copies around every convolution.** For ``channels_last`` data, ``keras.src.backend.torch.nn.conv``
   permutes NHWC to NCHW, makes it contiguous (a full copy), then converts it to the channels_last
   memory format (a second copy, back to the original byte order). Pooling makes one such copy.
   A permuted NHWC tensor already *is* a channels_last NCHW tensor, so none is needed: the
   replacements below hand that view to Keras's own ``channels_first`` code path (same padding,
   groups and dilation logic) and permute the result back — also a view. Keras has merged this fix
   upstream for conv (keras-team/keras#23199, not in a release as of 3.15.1) and has an open issue
   for pooling (#23649); the substitution is skipped when Keras's own ``_transpose_spatial_inputs``
   already takes ``channels_last_memory_format``.
2. **BatchNormalization from elementwise ops.** Keras's layer computes the moments and the
   normalisation with a dozen separate ops (and as many in the backward pass); PyTorch has one
   fused kernel (``torch.nn.functional.batch_norm``, cuDNN on a GPU). The replacement of
   ``BatchNormalization.call`` keeps Keras's semantics exactly: the same variables, Keras's
   momentum convention, the *biased* batch variance in the moving average (torch's running
   variance is unbiased: it is rescaled by (n-1)/n), float32 statistics under mixed precision, and
   the output in the layer's compute dtype. Masks, renorm, synchronized BN, non-last axes and
   float64 inputs fall back to Keras's own code.

Checkpoints are unaffected (the layers and variables are Keras's own), and results agree with the
unpatched code to float rounding (``tests/runtime/test_torch_speedups.py``).

**Installed explicitly, where work starts**: ``buildings fit``, prediction / evaluation
(:func:`buildings.inference.load_checkpoints`) and the benchmarks call :func:`install`; building or
loading a model does not. A library user calls it the same way::

    from buildings.runtime import torch_speedups
    torch_speedups.install()

It changes nothing, with one logged line saying why, when any of these holds: the backend is not
torch (silently), ``BUILDINGS_TORCH_SPEEDUPS=0`` (silently), Keras is outside the versions the
substitutions were verified against (:data:`VERIFIED_KERAS`: the test suite compares them with
Keras's own code on each), or the private functions they replace are not there with the expected
signatures. Plain Keras then runs, unchanged.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os

import keras

from buildings.runtime import keras_outside

__all__ = ["VERIFIED_KERAS", "install", "installed", "suspended", "uninstall", "unavailable_reason"]

# Keras minor versions (inclusive range) on which tests/runtime/test_torch_speedups.py passed, each run
# against that version's own torch backend (experiments/RESULTS.md, "torch speed-ups across Keras
# versions"). pyproject caps Keras below the next minor version, so CI always tests a verified one.
VERIFIED_KERAS = ((3, 14), (3, 15))

_originals: dict[str, object] = {}
_logged: set[str] = set()
log = logging.getLogger(__name__)


def _channels_first_view(x):
    """(N, H, W, C) → (N, C, H, W) with channels_last strides: a view of a contiguous ``x``."""
    import torch

    x = x.permute(0, 3, 1, 2)
    if not x.is_contiguous(memory_format=torch.channels_last):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    from keras.src.backend import standardize_data_format

    if len(inputs.shape) != 4 or standardize_data_format(data_format) != "channels_last":
        return _originals["conv"](inputs, kernel, strides, padding, data_format, dilation_rate)
    return _originals["conv"](_channels_first_view(_tensor(inputs)), kernel, strides, padding, "channels_first",
                              dilation_rate).permute(0, 2, 3, 1)


def _pool(name: str):
    def pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
        from keras.src.backend import standardize_data_format

        if len(inputs.shape) != 4 or standardize_data_format(data_format) != "channels_last":
            return _originals[name](inputs, pool_size, strides, padding, data_format)
        return _originals[name](_channels_first_view(_tensor(inputs)), pool_size, strides, padding,
                                "channels_first").permute(0, 2, 3, 1)

    pool.__name__ = pool.__qualname__ = name
    return pool


# one function object each, so torch.compile's guards see the same function after a re-install
_max_pool, _average_pool = _pool("max_pool"), _pool("average_pool")


def _tensor(x):
    from keras.src.backend.torch.core import convert_to_tensor

    return convert_to_tensor(x)


def _batch_norm_call(self, inputs, training=None, mask=None):
    """``BatchNormalization.call`` through torch's fused batch_norm (Keras's semantics kept)."""
    import torch
    import torch.nn.functional as F

    ndim = inputs.ndim
    axis = self.axis + ndim if self.axis < 0 else self.axis
    channels = inputs.shape[-1]
    count = inputs.numel() // channels if channels else 0
    train = bool(training) and self.trainable
    if (mask is not None or self.renorm or getattr(self, "synchronized", False) or axis != ndim - 1
            or ndim < 2 or (train and count < 2) or inputs.dtype == torch.float64):  # fp64: fp32 weights
        return _originals["BatchNormalization.call"](self, inputs, training=training, mask=mask)
    x = torch.movedim(inputs, -1, 1) if ndim > 2 else inputs  # NCHW view, channels_last strides
    weight = self.gamma.value if self.scale else None
    bias = self.beta.value if self.center else None
    if train:
        # momentum 1.0 makes the buffers the batch mean and the unbiased batch variance
        batch_mean = torch.zeros(channels, dtype=torch.float32, device=inputs.device)
        batch_var = torch.ones(channels, dtype=torch.float32, device=inputs.device)
        outputs = F.batch_norm(x, batch_mean, batch_var, weight, bias, True, 1.0, self.epsilon)
        variance = batch_var * ((count - 1) / count)  # Keras averages the biased variance
        self.moving_mean.assign(self.moving_mean.value * self.momentum + batch_mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance.value * self.momentum + variance * (1.0 - self.momentum))
    else:
        outputs = F.batch_norm(x, self.moving_mean.value, self.moving_variance.value, weight, bias, False, 0.0,
                               self.epsilon)
    if ndim > 2:
        outputs = torch.movedim(outputs, 1, -1)
    return keras.ops.cast(outputs, self.compute_dtype)


_CONV_PARAMETERS = ["inputs", "kernel", "strides", "padding", "data_format", "dilation_rate"]
_POOL_PARAMETERS = ["inputs", "pool_size", "strides", "padding", "data_format"]


def unavailable_reason() -> str | None:
    """Why the substitutions cannot be installed here, or None when they can. Reasons that need
    no explanation (another backend, switched off by the environment) start with ``-``."""
    if keras.backend.backend() != "torch":
        return f"-the backend is {keras.backend.backend()}"
    if os.environ.get("BUILDINGS_TORCH_SPEEDUPS", "1") == "0":
        return "-BUILDINGS_TORCH_SPEEDUPS=0"
    outside = keras_outside(VERIFIED_KERAS, "they were verified on")
    if outside:
        return outside
    try:
        from keras.src.backend.torch import nn as torch_nn
    except ImportError as err:  # pragma: no cover - Keras reorganised its sources
        return f"keras.src.backend.torch.nn cannot be imported ({err})"
    for name, expected in (("conv", _CONV_PARAMETERS), ("max_pool", _POOL_PARAMETERS),
                           ("average_pool", _POOL_PARAMETERS)):
        function = _originals.get(name, getattr(torch_nn, name, None))
        if function is None or list(inspect.signature(function).parameters)[:len(expected)] != expected:
            return f"keras.src.backend.torch.nn.{name} is not the function they replace"
    call = _originals.get("BatchNormalization.call", keras.layers.BatchNormalization.call)
    if list(inspect.signature(call).parameters)[:4] != ["self", "inputs", "training", "mask"]:
        return "BatchNormalization.call has another signature"
    return None


def installed() -> dict[str, bool]:
    """Which substitutions are active: {"copies": ..., "batch_norm": ...}."""
    return {"copies": "max_pool" in _originals, "batch_norm": "BatchNormalization.call" in _originals}


def install(*, copies: bool = True, batch_norm: bool = True) -> bool:
    """Install the substitutions (idempotent; ``copies``: conv / pooling without copies,
    ``batch_norm``: fused BatchNormalization). Returns whether any is active. Where they cannot be
    (see :func:`unavailable_reason`), Keras stays as released and one line is logged, once."""
    reason = unavailable_reason()
    if reason is not None:
        if not reason.startswith("-") and reason not in _logged:
            _logged.add(reason)
            log.warning("buildings: torch speed-ups off, plain Keras is used: %s", reason)
        return False
    from keras.src.backend.torch import nn as torch_nn

    replacements = {}
    if copies:
        replacements = {"max_pool": _max_pool, "average_pool": _average_pool}
        transpose = getattr(torch_nn, "_transpose_spatial_inputs", None)
        if transpose is None or "channels_last_memory_format" not in inspect.signature(transpose).parameters:
            replacements["conv"] = _conv  # else Keras has the upstream fix (keras-team/keras#23199)
    for name, replacement in replacements.items():
        if name not in _originals:
            _originals[name] = getattr(torch_nn, name)
            setattr(torch_nn, name, replacement)
    if batch_norm and "BatchNormalization.call" not in _originals:
        _originals["BatchNormalization.call"] = keras.layers.BatchNormalization.call
        keras.layers.BatchNormalization.call = _batch_norm_call
    return bool(_originals)


def uninstall() -> None:
    """Restore Keras's own code (for comparisons and tests)."""
    if not _originals:
        return
    from keras.src.backend.torch import nn as torch_nn

    for name, original in list(_originals.items()):
        if name == "BatchNormalization.call":
            keras.layers.BatchNormalization.call = original
        else:
            setattr(torch_nn, name, original)
    _originals.clear()


@contextlib.contextmanager
def suspended():
    """Run the body with Keras's own code, then put back whichever substitutions were active.

    For graph exporters: PyTorch's TorchScript ONNX exporter (torch 2.13) turns the fused
    BatchNorm's ``movedim(-1, 1)`` into a Transpose with the invalid perm (0, -1, 1, 2), a file
    onnxruntime refuses, and the substitutions only pay off in eager training anyway."""
    active = installed()
    uninstall()
    try:
        yield
    finally:
        if any(active.values()):
            install(**active)
