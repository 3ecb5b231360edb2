"""Prediction: tiling without seams, TTA, ensembles, post-processing, image formats, submissions
and the errors that must leave nothing behind."""

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import raw_mask_lines, score_back

from buildings.cli import main
from buildings.errors import CheckpointError, ImageReadError
from buildings.formats.images import decode_image, iter_images
from buildings.formats.rle import decode_rle
from buildings.formats.submission import read_submission
from buildings.inference.backends import load_checkpoints
from buildings.inference.predict import write_predictions
from buildings.inference.prediction import fill_holes, remove_small_components
from buildings.inference.predictor import Predictor
from buildings.models import build_model
from buildings.preprocessing import normalise


@pytest.fixture(scope="module")
def tiny_model():
    keras.utils.set_random_seed(0)
    return build_model("unet", filters=4, depth=2)


@pytest.fixture(scope="module")
def tiny_checkpoint(tiny_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny.keras"
    tiny_model.save(path)
    return path


def random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def direct(model, image):
    logits = np.asarray(model.predict_on_batch(normalise(image[None])))[0]
    return 1 / (1 + np.exp(-logits))


def test_tiles_without_overlap_match_whole_image_away_from_window_edges(tiny_model):
    image = random_image(256, 384)
    tiled = Predictor([tiny_model], tile=128, overlap=0).probabilities(image)
    whole = direct(tiny_model, image)
    assert tiled.shape == whole.shape == (256, 384, 1)
    # the receptive field of this 2-level U-Net reaches ~20 px: compare pixels 24+ px from window edges
    interior = np.zeros((256, 384), bool)
    for y in range(0, 256, 128):
        for x in range(0, 384, 128):
            interior[y + 24:y + 104, x + 24:x + 104] = True
    np.testing.assert_allclose(tiled[interior], whole[interior], atol=1e-4)  # float reordering only
    assert np.abs(tiled - whole)[~interior].max() > 1e-3  # the edges do differ: blending has work to do


def test_blending_of_identical_windows_has_no_seams():
    inputs = keras.Input((None, None, 3))
    constant = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(0.7))
    model = keras.Model(inputs, constant(inputs))
    probs = Predictor([model], tile=64, overlap=24).probabilities(random_image(200, 333))
    assert probs.shape == (200, 333, 1)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-0.7)), rtol=1e-6)


def test_overlapping_tiles_stay_close_to_whole_image(tiny_model):
    image = random_image(320, 320, seed=3)
    tiled = Predictor([tiny_model], tile=128, overlap=64).probabilities(image)
    whole = direct(tiny_model, image)
    assert np.abs(tiled - whole).mean() < 0.01


def test_small_and_odd_sizes_are_padded_and_cropped(tiny_model):
    for h, w in ((50, 70), (512, 515), (31, 600)):
        probs = Predictor([tiny_model], tile=256, overlap=64).probabilities(random_image(h, w))
        assert probs.shape == (h, w, 1) and np.isfinite(probs).all()


def test_tta_views_invert_and_d4_is_eight_distinct_views():
    from buildings import tta

    x = np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1)
    seen = []
    for view in tta.views("d4"):
        np.testing.assert_array_equal(tta.undo(tta.apply(x, view), view), x)
        seen.append(tta.apply(x, view).tobytes())
    assert len(set(seen)) == 8
    flips = [tta.apply(x, view) for view in tta.views("flip")]
    np.testing.assert_array_equal(flips[1], x[:, :, ::-1])  # horizontal
    np.testing.assert_array_equal(flips[2], x[:, ::-1])  # vertical: a half turn then a horizontal flip
    with pytest.raises(ValueError):
        tta.views("d8")


def test_d4_tta_is_the_mean_over_the_dihedral_group(tiny_model):
    image = random_image(64, 64, seed=5)
    expected = np.mean([np.rot90(direct(tiny_model, np.rot90(im, k)), -k)
                        for k in range(4) for im in (image,)] +
                       [np.rot90(direct(tiny_model, np.rot90(image, k)[:, ::-1])[:, ::-1], -k) for k in range(4)],
                       axis=0)
    got = Predictor([tiny_model], tta="d4").probabilities(image)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_ensemble_mean_weights_and_vote(tiny_model):
    keras.utils.set_random_seed(1)
    other = build_model("unet", filters=4, depth=2)
    keras.utils.set_random_seed(2)
    third = build_model("unet", filters=4, depth=2)
    image = random_image(64, 64, seed=7)
    p = [direct(m, image) for m in (tiny_model, other, third)]
    mean = Predictor([tiny_model, other], weights=[3, 1]).probabilities(image)
    np.testing.assert_allclose(mean, 0.75 * p[0] + 0.25 * p[1], atol=1e-6)
    voter = Predictor([tiny_model, other, third], vote=True)
    majority = (np.sum([q >= 0.5 for q in p], axis=0) >= 2)[..., 0]  # ballots at the rule's threshold, >=
    np.testing.assert_array_equal(voter.mask(voter.probabilities(image)).astype(bool), majority)


def test_postprocessing():
    mask = np.zeros((20, 20), np.uint8)
    mask[1:3, 1:3] = 1  # 4 px
    mask[5:15, 5:15] = 1  # 100 px with a hole
    mask[8:10, 8:10] = 0
    cleaned = remove_small_components(mask, 10)
    assert cleaned[1:3, 1:3].sum() == 0 and cleaned[5:15, 5:15].sum() == 96
    filled = fill_holes(cleaned)
    assert filled[5:15, 5:15].all() and filled.sum() == 100
    assert remove_small_components(np.zeros((4, 4), np.uint8), 5).sum() == 0


def test_grayscale_rgba_and_palette_images_become_rgb(tmp_path):
    base = random_image(40, 30)
    gray = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY)
    rgba = np.dstack([base, np.full((40, 30), 128, np.uint8)])
    for name, array in (("gray.png", gray), ("rgba.png", rgba)):
        ok, data = cv2.imencode(".png", array)
        image = decode_image(data.tobytes(), name)
        assert image.shape == (40, 30, 3) and image.dtype == np.uint8
    from PIL import Image

    palette = Image.fromarray(base).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette.save(tmp_path / "palette.png")
    (name, load), = list(iter_images(tmp_path / "palette.png"))
    assert name == "palette.png" and load().shape == (40, 30, 3)


def test_submission_in_order_and_nothing_left_on_error(tiny_model, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"t{i}.jpg"), random_image(64, 64, seed=i))
    predictor = Predictor([tiny_model], batch_size=2)
    report = write_predictions(predictor, iter_images(folder), tmp_path / "sub.csv", save_masks=tmp_path / "masks")
    assert report.names == ["t0.jpg", "t1.jpg", "t2.jpg"]
    assert [n for n, _ in raw_mask_lines(tmp_path / "sub.csv")] == report.names
    rows = read_submission(tmp_path / "sub.csv", shape=(64, 64))
    assert score_back(tmp_path / "sub.csv", (64, 64))["n_images"] == 3
    assert report.empty == sum(1 for rle in rows.values() if not rle)
    assert report.class_pixels[1] == sum(int(decode_rle(rle, (64, 64)).sum()) for rle in rows.values())
    for name, rle in rows.items():
        png = cv2.imread(str(tmp_path / "masks" / name.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(png > 0, decode_rle(rle, (64, 64)) > 0)
    (folder / "t3.jpg").write_bytes(b"not an image")
    with pytest.raises(ImageReadError, match="t3.jpg: not a decodable image"):
        write_predictions(predictor, iter_images(folder), tmp_path / "sub2.csv", save_overlays=tmp_path / "overlays")
    assert not (tmp_path / "sub2.csv").exists() and not (tmp_path / "overlays").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folders left
    with pytest.raises(ImageReadError, match="no such image"):
        list(iter_images(tmp_path / "missing"))


def test_wrong_checkpoints_are_refused(tmp_path, tiny_checkpoint):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoints([tmp_path / "none.keras"])
    (tmp_path / "junk.keras").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"junk.keras: not a Keras checkpoint \(no zip signature: b'junk'\)"):
        load_checkpoints([tmp_path / "junk.keras"])
    import zipfile

    with zipfile.ZipFile(tmp_path / "zip.keras", "w") as archive:  # a zip, but no Keras model inside
        archive.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointError, match="zip.keras: not a loadable .keras model"):
        load_checkpoints([tmp_path / "zip.keras"])
    classifier = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    classifier.save(tmp_path / "classifier.keras")
    with pytest.raises(CheckpointError, match="not a segmentation model"):
        load_checkpoints([tmp_path / "classifier.keras"])
    three = build_model("unet", filters=4, depth=1, num_classes=3)
    three.save(tmp_path / "three.keras")
    with pytest.raises(CheckpointError, match="disagree"):
        load_checkpoints([tiny_checkpoint, tmp_path / "three.keras"])


def test_cli_predict_evaluate_tune_on_synthetic(synth_dataset, synth_contest, tiny_checkpoint, tmp_path):
    runner = CliRunner()
    out = tmp_path / "submission.csv"
    result = runner.invoke(main, ["predict", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_dataset),
                                  "--out", str(out), "--tta", "flip", "--min-area", "10"])
    assert result.exit_code == 0, result.output
    assert [n for n, _ in raw_mask_lines(out)] == [n for n, _ in raw_mask_lines(synth_contest / "test_a_samplesubmit.csv")]
    scored = runner.invoke(main, ["score", str(out), str(synth_contest / "test_a_mask.csv"), "--json"])
    assert scored.exit_code == 0, scored.output
    result = runner.invoke(main, ["evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_dataset),
                                  "--gallery", str(tmp_path / "worst.png")])
    assert result.exit_code == 0 and "contest Dice" in result.output, result.output
    assert cv2.imread(str(tmp_path / "worst.png")) is not None
    result = runner.invoke(main, ["tune-threshold", "--checkpoint", str(tiny_checkpoint), "--data",
                                  str(synth_dataset)])
    assert result.exit_code == 0 and "best threshold" in result.output, result.output
    result = runner.invoke(main, ["predict", "--checkpoint", str(tmp_path / "no.keras"), "--data",
                                  str(synth_dataset), "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 1 and "checkpoint not found" in result.output
    assert not (tmp_path / "x.csv").exists()
