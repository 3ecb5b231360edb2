"""Where the active Keras backend computes: a description for logs and run directories, and
whether an accelerator is there (mixed precision ``auto`` turns bf16 on only then)."""

from __future__ import annotations

__all__ = ["accelerator_available", "describe_device"]


def describe_device() -> str:
    """The device the active backend computes on, in words: ``cpu``, ``cuda:0 (NVIDIA H100 ...)``."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return f"cuda:0 ({torch.cuda.get_device_name(0)})"
            return "cpu"
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "cpu":
                return "cpu"
            return f"{device.platform}:{device.id} ({getattr(device, 'device_kind', '')})"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return f"gpu ({gpus[0].name})" if gpus else "cpu"
    except Exception as err:  # pragma: no cover - informational only
        return f"unknown ({err})"
    return "unknown"


def accelerator_available() -> bool:
    """True when the active backend computes on a GPU (or another accelerator), not the CPU."""
    return describe_device() != "cpu"
