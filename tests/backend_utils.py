"""Helpers for tests that run unchanged on torch, jax and tensorflow."""

import keras
import numpy as np


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grad(fn, x: np.ndarray):
    """(fn(x), d fn / d x) on the active backend, as NumPy."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        t = torch.tensor(x, requires_grad=True)
        value = fn(t)
        value.backward()
        return value.detach().cpu().numpy(), t.grad.cpu().numpy()
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(fn)(x)
        return np.asarray(value), np.asarray(grad)
    if backend == "tensorflow":
        import tensorflow as tf

        t = tf.Variable(x)
        with tf.GradientTape() as tape:
            value = fn(t)
        return value.numpy(), tape.gradient(value, t).numpy()
    raise NotImplementedError(backend)
