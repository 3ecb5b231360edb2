"""Models are checked against the contract when they are opened (a probe forward on a 64x64 image):
the output at the input's size, as many channels as declared, height and width free; ONNX metadata
well-formed and finite. A model that breaks it is refused in one line naming the file and the
mismatch, before anything is predicted or written (issue 25, item 4)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from buildings.cli import main
from buildings.errors import CheckpointError
from buildings.inference.backends import load_checkpoints


def _save(model, path):
    model.save(path)
    return path


def half_size_model(path):
    inputs = keras.Input((None, None, 3))
    return _save(keras.Model(inputs, keras.layers.Conv2D(1, 3, strides=2, padding="same")(inputs)), path)


def double_size_model(path):
    inputs = keras.Input((None, None, 3))
    return _save(keras.Model(inputs, keras.layers.UpSampling2D(2)(keras.layers.Conv2D(1, 1)(inputs))), path)


def fixed_size_model(path):
    inputs = keras.Input((128, 128, 3))
    return _save(keras.Model(inputs, keras.layers.Conv2D(1, 1)(inputs)), path)


@pytest.mark.parametrize("build, message", [
    (half_size_model, "for a 64x64 image it answers (1, 32, 32, 1), expected (1, 64, 64, 1)"),
    (double_size_model, "for a 64x64 image it answers (1, 128, 128, 1), expected (1, 64, 64, 1)"),
    (fixed_size_model, "takes only 128x128 images"),
])
def test_keras_models_that_break_the_contract_are_refused_at_load(build, message, tmp_path):
    path = build(tmp_path / "model.keras")
    with pytest.raises(CheckpointError, match=f"^{path}: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        load_checkpoints([path])


def test_predict_with_a_broken_model_writes_nothing(tmp_path):
    import cv2

    path = half_size_model(tmp_path / "half.keras")
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((64, 64, 3), np.uint8))
    result = CliRunner().invoke(main, ["predict", "--checkpoint", str(path), "--images", str(images), "--out",
                                       str(tmp_path / "sub.csv")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "answers (1, 32, 32, 1)" in result.output and not (tmp_path / "sub.csv").exists()
    assert "post-processing:" not in result.output  # the rule is said only for a model that loaded


onnx = pytest.importorskip("onnx", reason="the [deploy] extra (onnx, onnxruntime) is not installed")


@pytest.fixture(scope="module")
def four_class_onnx(tmp_path_factory):
    from buildings.export import export_checkpoint
    from buildings.models import build_model

    folder = tmp_path_factory.mktemp("onnx")
    keras.utils.set_random_seed(0)
    build_model("fcn", num_classes=4).save(folder / "fcn.keras")
    return export_checkpoint(folder / "fcn.keras", folder / "fcn.onnx", "onnx")


def _with_metadata(source, target, **changes):
    proto = onnx.load(str(source))
    for entry in proto.metadata_props:
        key = entry.key.removeprefix("buildings.")
        if key in changes:
            entry.value = changes[key] if isinstance(changes[key], str) else json.dumps(changes[key])
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize("changes, message", [
    ({"num_classes": "1"}, "answers (1, 64, 64, 4), expected (1, 64, 64, 1)"),
    ({"std": [0, 0, 0]}, "std=[0, 0, 0] is not the normalisation this package feeds"),
    ({"mean": [0.5, 0.5]}, "mean=[0.5, 0.5] is not the normalisation"),
    ({"peak_bytes_per_pixel": "nan"}, "peak_bytes_per_pixel=nan is not a positive number"),
    ({"largest_per_pixel": "inf"}, "largest_per_pixel=inf is not a positive number"),
    ({"num_classes": "four"}, "buildings.num_classes='four' is not valid"),
])
def test_onnx_metadata_is_checked_against_the_graph_and_itself(four_class_onnx, tmp_path, changes, message):
    assert load_checkpoints([four_class_onnx])[0].num_classes == 4  # the untouched file loads
    path = _with_metadata(four_class_onnx, tmp_path / "edited.onnx", **changes)
    with pytest.raises(CheckpointError, match=f"^{path}: ") as refused:
        load_checkpoints([path])
    assert message in str(refused.value)


def _hand_made_onnx(path, *, input_type, shape):
    """A one-node graph (the mean of the three channels as one logit) with the metadata `buildings
    export` writes, its input of ``input_type`` and ``shape``."""
    from onnx import TensorProto, helper

    from buildings.formats.onnx_metadata import encode
    from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    nodes = [helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["logits"], axes=[-1], keepdims=1)]
    graph = helper.make_graph(nodes, "hand", [helper.make_tensor_value_info("image", input_type, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [*shape[:3], 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    values = {"num_classes": 1, "model": "hand", "input": "NHWC float32 RGB", "mean": IMAGENET_MEAN.tolist(),
              "std": IMAGENET_STD.tolist(), "peak_bytes_per_pixel": 100.0, "largest_per_pixel": 10.0,
              "source": "hand"}
    for key, value in encode(values).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("input_type, shape, message", [
    (onnx.TensorProto.FLOAT, ["batch", "height", "width", 3], None),
    (onnx.TensorProto.FLOAT, [1, 64, 64, 3], "takes only 64x64 images; height and width must be dynamic"),
    (onnx.TensorProto.UINT8, ["batch", "height", "width", 3], "its input is tensor(uint8)"),
])
def test_onnx_graphs_with_fixed_sizes_or_other_inputs_are_refused(tmp_path, input_type, shape, message):
    path = _hand_made_onnx(tmp_path / "hand.onnx", input_type=input_type, shape=shape)
    if message is None:  # the control: the same graph with a float, dynamic input loads
        assert load_checkpoints([path])[0].num_classes == 1
        return
    with pytest.raises(CheckpointError, match=f"^{path}: ") as refused:
        load_checkpoints([path])
    assert message in str(refused.value)
