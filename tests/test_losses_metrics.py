"""Losses and metrics against NumPy references; gradients; float16 / bfloat16 at 512x512.
Runs on whichever backend is active (tests/test_backends.py runs it under jax and tensorflow)."""

import numpy as np
import pytest
from helpers import to_numpy, value_and_grad

import buildings  # noqa: F401  (torch unless KERAS_BACKEND is set)
from buildings import losses, metrics
from buildings.task import MULTICLASS_LOSSES

rng = np.random.default_rng(0)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def np_bce(t, z):
    p = np.clip(sigmoid(z), 1e-12, 1 - 1e-12)
    return (-(t * np.log(p) + (1 - t) * np.log(1 - p))).reshape(len(t), -1).mean(1)


def np_dice(t, z, smooth=1.0):
    p = sigmoid(z).reshape(len(t), -1)
    t = t.reshape(len(t), -1)
    return 1 - (2 * (p * t).sum(1) + smooth) / (p.sum(1) + t.sum(1) + smooth)


def np_focal(t, z, alpha=0.25, gamma=2.0):
    p = sigmoid(z)
    pt = np.where(t == 1, p, 1 - p)
    at = np.where(t == 1, alpha, 1 - alpha)
    return (-at * (1 - pt) ** gamma * np.log(np.clip(pt, 1e-12, 1))).reshape(len(t), -1).mean(1)


def np_lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum()
    union = gts + (1 - gt_sorted).cumsum()
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def np_lovasz_hinge(t, z):
    out = []
    for ti, zi in zip(t.reshape(len(t), -1), z.reshape(len(z), -1), strict=True):
        errors = 1 - zi * (2 * ti - 1)
        order = np.argsort(-errors, kind="stable")
        out.append(np.dot(np.maximum(errors[order], 0), np_lovasz_grad(ti[order])))
    return np.array(out)


def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_ce(labels, z, weights=None):
    z = z.reshape(-1, z.shape[-1])
    labels = labels.reshape(-1)
    valid = labels != 255
    logp = np.log(softmax(z[valid]))
    nll = -logp[np.arange(valid.sum()), labels[valid]]
    w = np.ones_like(nll) if weights is None else np.asarray(weights)[labels[valid]]
    return (nll * w).sum() / w.sum()


def np_lovasz_softmax(labels, z):
    z = z.reshape(-1, z.shape[-1])
    labels = labels.reshape(-1)
    valid = labels != 255
    probs, labels = softmax(z[valid]), labels[valid]
    per_class = []
    for c in range(z.shape[-1]):
        fg = (labels == c).astype(float)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        per_class.append(np.dot(errors[order], np_lovasz_grad(fg[order])))
    return np.mean(per_class)


def np_mc_dice(labels, z, smooth=1.0):
    classes = z.shape[-1]
    z = z.reshape(-1, classes)
    labels = labels.reshape(-1)
    valid = labels != 255
    probs = softmax(z[valid])
    fg = np.eye(classes)[labels[valid]]
    return 1 - np.mean((2 * (probs * fg).sum(0) + smooth) / (probs.sum(0) + fg.sum(0) + smooth))


def binary_case():
    t = (rng.random((4, 16, 16, 1)) < 0.3).astype(np.float32)
    t[1] = 0  # an empty mask
    t[2] = 1  # a full mask
    z = rng.normal(0, 2, (4, 16, 16, 1)).astype(np.float32)
    return t, z


def multiclass_case(classes=4):
    labels = rng.integers(0, classes, (3, 12, 12)).astype(np.int32)
    labels[0, :3] = 255  # ignored pixels
    labels[labels == 3] = 1  # class 3 absent from the truth
    z = rng.normal(0, 2, (3, 12, 12, classes)).astype(np.float32)
    return labels, z


BINARY = [
    ("bce", {}, lambda t, z: np_bce(t, z).mean()),
    ("dice", {}, lambda t, z: np_dice(t, z).mean()),
    ("bce_dice", {}, lambda t, z: (0.8 * np_bce(t, z) + 0.2 * np_dice(t, z)).mean()),
    ("bce_dice", {"bce_weight": 0.5, "dice_weight": 0.5}, lambda t, z: (0.5 * np_bce(t, z) + 0.5 * np_dice(t, z)).mean()),
    ("focal", {}, lambda t, z: np_focal(t, z).mean()),
    ("lovasz_hinge", {}, lambda t, z: np_lovasz_hinge(t, z).mean()),
]
MULTI = [
    ("ce", {}, np_ce),
    ("ce", {"class_weights": [1.0, 2.0, 0.5, 1.0]}, lambda y, z: np_ce(y, z, [1.0, 2.0, 0.5, 1.0])),
    ("lovasz_softmax", {}, np_lovasz_softmax),
    ("multiclass_dice", {}, np_mc_dice),
    ("ce_lovasz", {}, lambda y, z: 0.7 * np_ce(y, z) + 0.3 * np_lovasz_softmax(y, z)),
]


@pytest.mark.parametrize("name, options, reference", BINARY, ids=[f"{n}{o}" for n, o, _ in BINARY])
def test_binary_losses_match_numpy(name, options, reference):
    t, z = binary_case()
    loss = losses.get_loss(name, **options)
    assert to_numpy(loss(t, z)) == pytest.approx(reference(t, z), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name, options, reference", MULTI, ids=[f"{n}{o}" for n, o, _ in MULTI])
def test_multiclass_losses_match_numpy_and_ignore_255(name, options, reference):
    labels, z = multiclass_case()
    loss = losses.get_loss(name, **options)
    assert to_numpy(loss(labels, z)) == pytest.approx(reference(labels, z), rel=1e-4, abs=1e-6)
    # changing the logits of ignored pixels changes nothing
    z2 = z.copy()
    z2[0, :3] = rng.normal(0, 5, z2[0, :3].shape)
    assert to_numpy(loss(labels, z2)) == pytest.approx(to_numpy(loss(labels, z)), rel=1e-5, abs=1e-6)


def test_perfect_predictions_give_near_zero_dice_and_lovasz():
    t, _ = binary_case()
    z = np.where(t > 0, 20.0, -20.0).astype(np.float32)
    assert to_numpy(losses.get_loss("dice")(t, z)) < 1e-3
    assert to_numpy(losses.get_loss("lovasz_hinge")(t, z)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_every_loss_has_finite_gradients(name):
    if name in MULTICLASS_LOSSES:
        y, z = multiclass_case()
    else:
        y, z = binary_case()
    loss = losses.get_loss(name)
    value, grad = value_and_grad(lambda logits: loss(y, logits), z)
    assert np.isfinite(value) and np.isfinite(grad).all() and np.abs(grad).sum() > 0


@pytest.mark.parametrize("name", list(losses.LOSSES))
def test_losses_serialise_by_name_and_config(name):
    import keras

    loss = losses.get_loss(name)
    again = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(again) is type(loss) and again.get_config() == loss.get_config()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_no_overflow_in_half_precision_at_512(dtype):
    import keras

    t = (rng.random((2, 512, 512, 1)) < 0.5).astype(np.float32)
    z = rng.normal(0, 3, (2, 512, 512, 1)).astype(np.float32)
    z_half = keras.ops.cast(z, dtype)
    z_back = to_numpy(keras.ops.cast(z_half, "float32"))  # the same values the half tensor holds
    for name in ("bce", "dice", "bce_dice", "focal", "lovasz_hinge"):
        loss = losses.get_loss(name)
        half = to_numpy(loss(t, z_half))
        assert np.isfinite(half), name
        assert half == pytest.approx(to_numpy(loss(t, z_back)), rel=1e-3), name
    metric = metrics.ContestDice()
    metric.update_state(t, z_half)
    pred, truth = (z_back > 0).reshape(2, -1), t.reshape(2, -1) > 0
    expected = np.mean(2 * (pred & truth).sum(1) / (pred.sum(1) + truth.sum(1)))
    assert to_numpy(metric.result()) == pytest.approx(expected, rel=1e-4)


def np_binary_counts(t, z, threshold=0.5):
    p = sigmoid(z) > threshold
    t = t > 0.5
    return (p & t).sum(), (p & ~t).sum(), (~p & t).sum()


def test_contest_dice_is_mean_per_image_dice_with_empty_rule():
    t = np.zeros((4, 8, 8, 1), np.float32)
    z = np.full((4, 8, 8, 1), -5.0, np.float32)
    # image 0: both empty → 1; image 1: prediction on empty truth → 0
    z[1, :2] = 5.0
    # image 2: truth 8 pixels, prediction 4 of them → 2*4/12
    t[2, 0] = 1
    z[2, 0, :4] = 5.0
    # image 3: perfect
    t[3, 3:5] = 1
    z[3, 3:5] = 5.0
    metric = metrics.ContestDice()
    metric.update_state(t[:2], z[:2])  # streaming over two batches
    metric.update_state(t[2:], z[2:])
    assert to_numpy(metric.result()) == pytest.approx((1 + 0 + 8 / 12 + 1) / 4)
    metric.reset_state()
    assert to_numpy(metric.result()) == 0.0


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8])
def test_pooled_binary_metrics_match_numpy(threshold):
    t, z = binary_case()
    tp, fp, fn = np_binary_counts(t, z, threshold)
    expected = {
        "global_dice": 2 * tp / (2 * tp + fp + fn), "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp), "recall": tp / (tp + fn),
    }
    for metric in metrics.binary_metrics(threshold)[1:]:
        metric.update_state(t[:2], z[:2])
        metric.update_state(t[2:], z[2:])
        assert to_numpy(metric.result()) == pytest.approx(expected[metric.name], rel=1e-5)
        metric.reset_state()
        assert to_numpy(metric.tp) == 0 and to_numpy(metric.fp) == 0 and to_numpy(metric.fn) == 0


def test_mean_iou_ignores_255_and_absent_classes():
    labels, z = multiclass_case()
    metric = metrics.MeanIoU(4)
    metric.update_state(labels, z)
    pred = z.argmax(-1)
    valid = labels != 255
    ious = []
    for c in range(4):
        inter = ((pred == c) & (labels == c) & valid).sum()
        union = (((pred == c) | (labels == c)) & valid).sum()
        if union:
            ious.append(inter / union)
    assert to_numpy(metric.result()) == pytest.approx(np.mean(ious), rel=1e-5)
    metric.reset_state()
    assert to_numpy(metric.confusion).sum() == 0


def test_class_iou_metrics_match_numpy_and_name_the_classes():
    labels, z = multiclass_case()
    names = ("building", "farmland", "forest", "other")
    reported = metrics.multiclass_metrics(4, names)
    assert [m.name for m in reported] == ["miou", *(f"iou_{n}" for n in names)]
    pred = z.argmax(-1)
    valid = labels != 255
    for metric in reported[1:]:
        metric.update_state(labels, z)
        c = metric.class_id
        inter = ((pred == c) & (labels == c) & valid).sum()
        union = (((pred == c) | (labels == c)) & valid).sum()
        assert to_numpy(metric.result()) == pytest.approx(inter / union if union else 0.0, rel=1e-5)
    with pytest.raises(ValueError, match="class_id must be in 0..3"):
        metrics.ClassIoU(4, 4)
