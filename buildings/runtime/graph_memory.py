"""Functional models that free each intermediate tensor after its last use.

Keras's functional executor (``keras.src.ops.function.Function._run_through_graph``) keeps every
intermediate output of a call in one dictionary until the call returns. Under eager execution
(the torch backend, without autograd as in prediction and validation) that holds every activation
of the network at once: measured on a 512² U-Net (filters 32, batch 4, inference), 5.2 GB resident
against 1.6 GB for the same network in plain PyTorch. :func:`install` replaces that one method with
a copy that, from a plan computed once per graph (which node runs when, and after which node each
tensor is no longer needed), drops each intermediate from the dictionary as soon as its last
consumer has run. Outputs are untouched, nothing else changes, and the result is the same tensor
objects (``tests/runtime/test_graph_memory.py``); during training autograd still keeps what the backward
pass needs, as it would in plain PyTorch. Compiled backends (jax, tensorflow graphs) plan their own
memory and are not affected either way.

Like ``torch_speedups`` it reaches into ``keras.src``: it is installed explicitly where work
starts (training, prediction, the benchmarks), gated on the Keras versions whose executor it was
checked against, and otherwise leaves Keras unchanged with one logged line. Set
``BUILDINGS_FREE_INTERMEDIATES=0`` to keep Keras's own executor.
"""

from __future__ import annotations

import inspect
import logging
import os
import weakref

import keras

from buildings.runtime import keras_outside

__all__ = ["VERIFIED_KERAS", "install", "installed", "uninstall", "unavailable_reason"]

VERIFIED_KERAS = ((3, 14), (3, 15))  # their _run_through_graph is the same (compared line by line)

_original = {}
_plans: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_logged: set[str] = set()
log = logging.getLogger(__name__)


def _plan(function):
    """(nodes in execution order, tensor ids to release after each) for ``function``'s graph."""
    plan = _plans.get(function)
    if plan is not None:
        return plan
    available = {id(x) for x in function.inputs}
    order = []
    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            if not node.operation or node.is_input:
                continue
            if any(id(x) not in available for x in node.input_tensors):
                continue
            order.append(node)
            available.update(id(x) for x in node.outputs)
    last_use = {}
    for index, node in enumerate(order):
        for x in node.input_tensors:
            last_use[id(x)] = index
    keep = {id(x) for x in function.outputs} | {id(x) for x in function.inputs}
    release = [[] for _ in order]
    for tensor_id, index in last_use.items():
        if tensor_id not in keep:
            release[index].append(tensor_id)
    plan = (order, release)
    _plans[function] = plan
    return plan


def _run_through_graph(self, inputs, operation_fn=lambda op: op, call_fn=None):
    """Keras's ``Function._run_through_graph`` (3.14 / 3.15) with intermediates released."""
    from keras.src import tree

    inputs = tree.flatten(inputs)
    tensor_dict = {}
    for x, y in zip(self.inputs, inputs, strict=False):
        tensor_dict[id(x)] = y
    order, release = _plan(self)
    for node, done in zip(order, release, strict=True):
        args, kwargs = node.arguments.fill_in(tensor_dict)
        if call_fn is not None:
            outputs = call_fn(operation_fn(node.operation), *args, **kwargs)
        else:
            outputs = operation_fn(self._get_operation_for_node(node))(*args, **kwargs)
        for x, y in zip(node.outputs, tree.flatten(outputs), strict=False):
            tensor_dict[id(x)] = y
        del args, kwargs, outputs
        for tensor_id in done:
            tensor_dict.pop(tensor_id, None)
    output_tensors = []
    for i, x in enumerate(self.outputs):
        if id(x) not in tensor_dict:
            path = ".".join(str(p) for p in tree.flatten_with_path(self._outputs_struct)[i][0])
            raise ValueError(f"Output with path `{path}` is not connected to `inputs`")
        output_tensors.append(tensor_dict[id(x)])
    return tree.pack_sequence_as(self._outputs_struct, output_tensors)


def unavailable_reason() -> str | None:
    """Why it cannot be installed here (None: it can). Reasons starting with ``-`` are not logged."""
    if os.environ.get("BUILDINGS_FREE_INTERMEDIATES", "1") == "0":
        return "-BUILDINGS_FREE_INTERMEDIATES=0"
    outside = keras_outside(VERIFIED_KERAS, "it was checked against")
    if outside:
        return outside
    try:
        from keras.src.ops.function import Function
    except ImportError as err:  # pragma: no cover
        return f"keras.src.ops.function cannot be imported ({err})"
    method = _original.get("run", getattr(Function, "_run_through_graph", None))
    if method is None or list(inspect.signature(method).parameters) != ["self", "inputs", "operation_fn", "call_fn"]:
        return "Function._run_through_graph is not the method it replaces"
    if not hasattr(Function, "_get_operation_for_node"):
        return "Function._get_operation_for_node is missing"
    return None


def installed() -> bool:
    return "run" in _original


def install() -> bool:
    """Use the releasing executor (idempotent); False, with one logged line, where it cannot be."""
    reason = unavailable_reason()
    if reason is not None:
        if not reason.startswith("-") and reason not in _logged:
            _logged.add(reason)
            log.warning("buildings: functional models keep their intermediates (Keras's executor): %s", reason)
        return False
    from keras.src.ops.function import Function

    if "run" not in _original:
        _original["run"] = Function._run_through_graph
        Function._run_through_graph = _run_through_graph
    return True


def uninstall() -> None:
    if "run" in _original:
        from keras.src.ops.function import Function

        Function._run_through_graph = _original.pop("run")


def activation_bytes(model, height: int, width: int) -> int:
    """Peak bytes of the activations alive at once during one inference call of ``model`` on one
    ``height`` x ``width`` image, as the releasing executor runs it (each intermediate dropped after
    its last use; a nested model — an encoder — counted at its own inner peak)."""
    return activation_profile(model, height, width)[0]


def largest_tensor_elements(model, height: int, width: int) -> int:
    """Elements of the largest single intermediate tensor of one ``height`` x ``width`` image."""
    return activation_profile(model, height, width)[1]


def activation_profile(model, height: int, width: int) -> tuple[int, int]:
    """(peak live bytes, elements of the largest tensor) of one inference call on one image."""
    import numpy as np

    def elements(spec) -> int:
        return int(np.prod([1 if d is None else d for d in spec.shape]))

    def size(spec) -> int:
        return elements(spec) * np.dtype(keras.backend.standardize_dtype(spec.dtype)).itemsize

    largest = 0

    def walk(function, input_specs) -> tuple[int, list]:
        from keras.src import tree

        nonlocal largest
        specs = {id(x): s for x, s in zip(function.inputs, input_specs, strict=True)}
        live = sum(size(s) for s in input_specs)
        peak = live
        order, release = _plan(function)
        for node, done in zip(order, release, strict=True):
            args, kwargs = node.arguments.fill_in(specs)
            operation = node.operation
            if isinstance(operation, keras.Model) and hasattr(operation, "_nodes_by_depth"):
                inner_peak, outputs = walk(operation, tree.flatten((args, kwargs))[: len(operation.inputs)])
                peak = max(peak, live + inner_peak)
            else:
                outputs = tree.flatten(operation.compute_output_spec(*args, **kwargs))
            for x, spec in zip(node.outputs, outputs, strict=False):
                specs[id(x)] = spec
                live += size(spec)
                largest = max(largest, elements(spec))
            peak = max(peak, live)
            for tensor_id in done:
                spec = specs.pop(tensor_id, None)
                if spec is not None:
                    live -= size(spec)
        return peak, [specs[id(x)] for x in function.outputs]

    peak, _ = walk(model, [keras.KerasTensor((1, height, width, model.input_shape[-1]), dtype="float32")])
    return peak, largest
