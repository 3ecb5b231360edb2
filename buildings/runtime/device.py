"""Where the active Keras backend computes: a description for logs and run directories, and
whether an accelerator is there (mixed precision ``auto`` turns bf16 on only then)."""

from __future__ import annotations

__all__ = ["accelerator_available", "batch_size_for", "batch_size_from", "describe_device", "memory_budget"]


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


CPU_BUDGET_BYTES = 2 * 2**30  # on a CPU a bigger batch is no faster per image: keep memory low


def memory_budget(keras_models: bool = True) -> int:
    """Bytes an inference / validation batch may use: half the free GPU memory on a GPU (torch),
    else the smaller of 2 GiB and a quarter of the memory the system has available (always the
    latter for exported models run by onnxruntime: ``keras_models=False``, Keras is not imported)."""
    if not keras_models:
        return _cpu_budget()
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            free, _ = torch.cuda.mem_get_info()
            return int(free * 0.5)
    elif accelerator_available():
        return 8 * 2**30  # jax / tensorflow manage their own pools; assume a modest share of a GPU
    return _cpu_budget()


def _cpu_budget() -> int:
    available = CPU_BUDGET_BYTES * 4
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return min(CPU_BUDGET_BYTES, available // 4)


# PyTorch's CUDA kernels index some tensors (bilinear upsampling in channels_last, among others)
# with 32-bit integers and refuse a tensor of 2**31 elements or more: seen on an H100, DeepLabV3+
# at 512² with batch 32 (RESULTS.md). No intermediate of an automatic batch may reach it.
MAX_TENSOR_ELEMENTS = 2**31 - 1


def batch_size_from(profiles, budget: int, most: int = 32) -> int:
    """The number of images per inference call that fits ``budget`` bytes, given each model's
    (peak live bytes, largest tensor's elements) for one image: each image costs 1.5 times the
    largest peak (the 1.5 covers convolution workspaces and the probabilities, measured on the
    CPU: RESULTS.md), and no intermediate tensor of the batch may hold
    :data:`MAX_TENSOR_ELEMENTS` elements or more."""
    per_image = 1.5 * max(peak for peak, _ in profiles)
    largest = max(elements for _, elements in profiles)
    return int(max(1, min(most, budget // max(per_image, 1), MAX_TENSOR_ELEMENTS // max(largest, 1))))


def batch_size_for(models, height: int, width: int, *, budget: int | None = None, most: int = 32) -> int:
    """:func:`batch_size_from` for Keras ``models`` at ``height`` x ``width`` (activations from
    ``graph_memory.activation_profile``), within ``budget`` (default :func:`memory_budget`)."""
    from buildings.runtime.graph_memory import activation_profile

    profiles = [activation_profile(model, height, width) for model in models]
    return batch_size_from(profiles, memory_budget() if budget is None else budget, most)
