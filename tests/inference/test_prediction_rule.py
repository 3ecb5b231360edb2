"""The one probability → mask rule (``inference.prediction.MaskRule``) is the rule of every path:
a tile as a JPEG and the same pixels as a GeoTIFF get the same mask under every option, and
``buildings tune``'s score is what ``buildings predict`` + ``buildings score`` give for its choice."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import CRS, TRANSFORM, brightness_model

from buildings.cli import main
from buildings.errors import ConfigError, DataError
from buildings.inference.prediction import Choice as RuleChoice
from buildings.inference.prediction import (
    MaskRule,
    Postprocess,
    fill_holes,
    remove_small_components,
    resolve_rule,
    save_choice,
)
from buildings.task import Task

# -- the rule itself --------------------------------------------------------------------------------


def test_the_threshold_keeps_a_pixel_at_exactly_the_threshold():
    probs = np.array([[[0.25], [0.5], [0.75]]], np.float32)
    np.testing.assert_array_equal(MaskRule(0.5).mask(probs), [[0, 1, 1]])
    np.testing.assert_array_equal(MaskRule(float(np.float32(0.75))).mask(probs), [[0, 0, 1]])


def test_buildings_are_4_connected_and_holes_are_their_8_connected_dual():
    diagonal = np.zeros((8, 8), np.uint8)
    diagonal[2, 2] = diagonal[3, 3] = 1  # two pixels touching at a corner: two buildings of 1 pixel
    assert remove_small_components(diagonal, 2).sum() == 0
    ring = np.ones((5, 5), np.uint8)
    ring[2, 2] = 0  # a one-pixel hole: filled
    assert fill_holes(ring).all()
    leaky = np.ones((5, 5), np.uint8)
    leaky[1:4, 1:4] = 0
    leaky[2, 2] = 1
    leaky[0, 0] = 0  # the background reaches the hole only diagonally: 8-connected, so not a hole
    leaky[1, 1] = 0
    assert fill_holes(leaky)[1, 2] == 0


def test_min_area_comes_before_hole_filling_and_the_gates_judge_what_is_left():
    mask = np.zeros((20, 20), np.float32)
    mask[2:12, 2:12] = 0.9  # 100 px building with a 4-px hole
    mask[5:7, 5:7] = 0.1
    mask[15:17, 15:17] = 0.9  # 4 px speck
    probs = mask[..., None]
    rule = MaskRule(0.5, Postprocess(min_area=5, fill_holes=True))
    out = rule.mask(probs)
    assert out[15:17, 15:17].sum() == 0 and out[2:12, 2:12].all()  # speck dropped, hole filled
    assert MaskRule(0.5, Postprocess(min_area=5, fill_holes=True, empty_below_area=101)).mask(probs).sum() == 0
    assert MaskRule(0.5, Postprocess(min_area=5, fill_holes=True, empty_below_area=100)).mask(probs).sum() == 100
    assert MaskRule(0.5, Postprocess(empty_below_peak=0.95)).mask(probs).sum() == 0


def test_open_block_edges_keep_small_components_that_continue_beyond_them():
    probs = np.zeros((16, 16, 1), np.float32)
    probs[0:2, 6:8] = 1  # 4 px touching the top edge
    rule = MaskRule(0.5, Postprocess(min_area=10))
    assert rule.block_mask(probs).sum() == 0
    assert rule.block_mask(probs, (True, False, False, False)).sum() == 4  # more raster above
    assert rule.block_mask(probs, (False, True, True, True)).sum() == 0


def test_multiclass_masks_are_the_argmax_and_refuse_binary_steps():
    probs = np.array([[[0.2, 0.5, 0.3], [0.6, 0.3, 0.1]]], np.float32)
    np.testing.assert_array_equal(MaskRule().mask(probs), [[1, 0]])
    with pytest.raises(ConfigError, match="binary post-processing"):
        MaskRule(0.5, Postprocess(min_area=4)).check(Task(3))


def test_resolve_rule_takes_the_tuned_file_and_lets_given_options_override_it(tmp_path):
    checkpoint = tmp_path / "model.keras"
    assert resolve_rule(checkpoint) == (MaskRule(), "defaults")
    save_choice(RuleChoice(rule=MaskRule(0.35, Postprocess(min_area=64, empty_below_peak=0.6))),
                tmp_path / "postprocess.json")
    rule, source = resolve_rule(checkpoint)
    assert rule == MaskRule(0.35, Postprocess(min_area=64, empty_below_peak=0.6)) and source.endswith("postprocess.json")
    rule, source = resolve_rule(checkpoint, min_area=8)
    assert rule.postprocess.min_area == 8 and rule.threshold == 0.35 and "overridden by --min-area" in source
    assert resolve_rule(checkpoint, "none")[0] == MaskRule()
    with pytest.raises(ConfigError, match="no such file"):
        resolve_rule(checkpoint, str(tmp_path / "missing.json"))


# -- every path applies it ------------------------------------------------------------------------------
rasterio = pytest.importorskip("rasterio", reason="the [deploy] extra (rasterio) is not installed")


@pytest.fixture(scope="module")
def tile_as_jpeg_and_geotiff(tmp_path_factory):
    """A 512x512 scene as a JPEG, and its decoded pixels as a georeferenced GeoTIFF: bright roofs
    (for the brightness model) of many sizes, some with courtyards, on a dark ground with a ramp of
    mid tones, so every option changes something."""
    from buildings.formats.images import decode_image

    folder = tmp_path_factory.mktemp("tile")
    rng = np.random.default_rng(11)
    grey = np.full((512, 512), 50.0)
    grey[:, 400:] = np.linspace(40, 190, 112)[None, :]  # a ramp: probabilities across (0, 1)
    for _ in range(40):
        side = int(rng.integers(3, 40))
        y, x = (int(v) for v in rng.integers(0, 380, 2))
        grey[y:y + side, x:x + side] = 185
        if side > 20:  # a courtyard
            grey[y + side // 3:y + 2 * side // 3, x + side // 3:x + 2 * side // 3] = 50
    grey += rng.normal(0, 4, grey.shape)  # below 1 everywhere: the peak gate has room above the peak
    bgr = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    jpeg = folder / "scene.jpg"
    jpeg.write_bytes(cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    rgb = decode_image(jpeg.read_bytes(), jpeg.name)
    geotiff = folder / "scene.tif"
    with rasterio.open(geotiff, "w", driver="GTiff", height=512, width=512, count=3, dtype="uint8", crs=CRS,
                       transform=TRANSFORM) as out:
        out.write(np.moveaxis(rgb, -1, 0))
    checkpoint = brightness_model(folder / "brightness.keras")
    return jpeg, geotiff, checkpoint, rgb


def _probabilities(checkpoint, rgb):
    from buildings.inference import Predictor

    return Predictor.from_checkpoints([checkpoint]).probabilities(rgb)


def _rules(probs):
    """Options that each change the mask of this scene: a threshold at exactly a probability value
    many pixels hold, min-area, hole filling, and each gate both ways."""
    values, counts = np.unique(probs, return_counts=True)
    middle = values[(values > 0.3) & (values < 0.7)]
    tied = float(middle[np.argmax(counts[(values > 0.3) & (values < 0.7)])])
    building = int((probs >= 0.5).sum())
    peak = float(probs.max())
    assert peak < 1
    return {
        "threshold at a probability value": ({"threshold": tied}, None),
        "min-area": ({"min_area": 200}, None),
        "fill holes": ({"fill_holes": True}, None),
        "min-area and holes": ({"min_area": 60, "fill_holes": True}, None),
        "area gate fires": ({}, Postprocess(empty_below_area=building + 1)),
        "area gate spares": ({}, Postprocess(empty_below_area=building)),
        "peak gate fires": ({}, Postprocess(empty_below_peak=peak + (1 - peak) / 2)),
        "peak gate spares": ({}, Postprocess(min_area=30, empty_below_peak=peak - 1e-3)),
    }, tied


def test_a_jpeg_tile_and_the_same_pixels_as_a_geotiff_give_identical_masks(tile_as_jpeg_and_geotiff, tmp_path):
    jpeg, geotiff, checkpoint, rgb = tile_as_jpeg_and_geotiff
    probs = _probabilities(checkpoint, rgb)
    rules, tied = _rules(probs)
    assert np.count_nonzero(probs == np.float32(tied)) > 10  # the threshold lands on pixels that hold it
    runner = CliRunner()
    masks_by_rule = {}
    for label, (options, gates) in rules.items():
        flags = []
        for name, value in options.items():
            flags += [f"--{name.replace('_', '-')}"] if value is True else [f"--{name.replace('_', '-')}", repr(value)]
        if gates is not None:
            choice = tmp_path / f"{len(masks_by_rule)}.json"
            save_choice(RuleChoice(rule=MaskRule(0.5, gates)), choice)
            flags += ["--postprocess", str(choice)]
        out_png, out_tif = tmp_path / f"png{len(masks_by_rule)}", tmp_path / f"tif{len(masks_by_rule)}"
        for image, out in ((jpeg, out_png), (geotiff, out_tif)):
            done = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--images", str(image),
                                        "--save-masks", str(out), *flags])
            assert done.exit_code == 0, f"{label}: {done.output[-1500:]}"
        from_jpeg = cv2.imread(str(out_png / "scene.png"), cv2.IMREAD_UNCHANGED) // 255
        with rasterio.open(out_tif / "scene.tif") as dataset:
            from_geotiff = dataset.read(1)
            assert dataset.crs.to_string() == CRS
        np.testing.assert_array_equal(from_geotiff, from_jpeg, err_msg=label)
        rule = MaskRule(options.get("threshold", 0.5),
                        gates or Postprocess(options.get("min_area", 0), options.get("fill_holes", False)))
        np.testing.assert_array_equal(from_jpeg, rule.mask(probs), err_msg=label)  # and it is the rule's mask
        masks_by_rule[label] = from_jpeg
    plain = (probs[..., 0] >= 0.5)
    for label in ("min-area", "fill holes", "area gate fires", "peak gate fires"):
        assert (masks_by_rule[label] != plain).any(), f"{label} changed nothing on this scene: a weak test"
    assert masks_by_rule["area gate fires"].sum() == 0 and masks_by_rule["area gate spares"].sum() > 0
    assert masks_by_rule["peak gate fires"].sum() == 0 and masks_by_rule["peak gate spares"].sum() > 0
    assert (probs[..., 0] == np.float32(tied)).any() and masks_by_rule["threshold at a probability value"][
        probs[..., 0] == np.float32(tied)].all()


def test_tune_score_is_what_predict_and_score_give_for_its_choice(synth_dataset, tmp_path):
    from buildings.data.splits import labelled_items, open_split
    from buildings.formats.rle import encode_rle

    checkpoint = brightness_model(tmp_path / "brightness.keras")
    runner = CliRunner()
    tuned = runner.invoke(main, ["tune", "--checkpoint", str(checkpoint), "--data", str(synth_dataset)])
    assert tuned.exit_code == 0, tuned.output[-2000:]
    choice = json.loads((tmp_path / "postprocess.json").read_text())
    truth = tmp_path / "validation_truth.csv"
    truth.write_text("".join(f"{name}\t{encode_rle(load()[1])}\n"
                             for name, load in labelled_items(open_split(synth_dataset, "validation"))))
    predicted = runner.invoke(main, ["predict", "--checkpoint", str(checkpoint), "--data", str(synth_dataset),
                                     "--split", "validation", "--out", str(tmp_path / "validation.csv")])
    assert predicted.exit_code == 0, predicted.output[-2000:]
    assert "postprocess.json" in predicted.output  # the tuned rule was applied by default
    scored = runner.invoke(main, ["score", str(tmp_path / "validation.csv"), str(truth), "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.output)["dice"] == pytest.approx(choice["score"], abs=1e-9)
    assert choice["score"] != pytest.approx(choice["baseline"], abs=1e-9) or choice["min_area"] == 0


# -- postprocess.json is read strictly (issue 25, item 5) ----------------------------------------------
GOOD = {"threshold": 0.4, "min_area": 16, "fill_holes": False, "empty_below_area": 0, "empty_below_peak": 0.0}


@pytest.mark.parametrize("text, message", [
    (json.dumps({**GOOD, "fill_holes": "false"}), "fill_holes must be true or false, got \"false\""),
    (json.dumps({**GOOD, "min_area": -5}), "min_area -5 is not in [0, 2147483647]"),
    (json.dumps({**GOOD, "min_area": 16.5}), "min_area must be a whole number, got 16.5"),
    (json.dumps({**GOOD, "empty_below_area": -100}), "empty_below_area -100 is not in [0, 2147483647]"),
    (json.dumps({**GOOD, "empty_below_peak": 5}), "empty_below_peak 5 is not in [0.0, 1.0]"),
    (json.dumps({**GOOD, "threshold": True}), "threshold must be a number, got true"),
    (json.dumps(GOOD).replace("0.4", "1e400"), "threshold inf is not in (0.0, 1.0)"),
    (json.dumps(GOOD).replace("0.4", "Infinity"), "threshold inf is not in (0.0, 1.0)"),
    (json.dumps(GOOD).replace("16", "1" + "0" * 400), "min_area 1000"),
    (json.dumps({**GOOD, "score": "high"}), "score must be a number or null"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    ("[1, 2]", "a JSON object is"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "min_area"}), "no 'min_area'"),
])
def test_a_bad_postprocess_json_is_refused_in_one_line_before_any_work(text, message, tmp_path):
    from buildings.inference.prediction import load_choice

    path = tmp_path / "postprocess.json"
    path.write_text(text)
    with pytest.raises(DataError, match=f"^{path}: ") as refused:
        load_choice(path)
    assert message in str(refused.value) and "\n" not in str(refused.value) and len(str(refused.value)) < 400
    assert load_choice_ok(tmp_path) == MaskRule(0.4, Postprocess(min_area=16))


def load_choice_ok(folder):
    from buildings.inference.prediction import load_choice

    good = folder / "good.json"
    good.write_text(json.dumps(GOOD))
    return load_choice(good).rule
