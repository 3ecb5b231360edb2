"""Experiment: what each prediction option changes, on barnarp test_a scored against its truth.

Run:  python experiments/predict_options.py --checkpoint RUN/best.keras [--checkpoint OTHER.keras]
          --data tianchi_buildings/val10 --data-dir DIR [--truth ../shared/data/barnarp/test_a_mask.csv]

The threshold is tuned on the validation split (never on test_a), then every configuration
predicts the test split and is scored with the contest metric. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import buildings  # noqa: E402,F401
from buildings.data.splits import open_split, split_items  # noqa: E402
from buildings.formats.submission import score_submission  # noqa: E402
from buildings.inference import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    MaskRule,
    Postprocess,
    Predictor,
    evaluate,
    load_checkpoints,
    write_predictions,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", action="append", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--data-dir", default=None)
    default_truth = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp" / "test_a_mask.csv"
    parser.add_argument("--truth", default=str(default_truth))
    parser.add_argument("--skip-d4", action="store_true")
    args = parser.parse_args()

    models = load_checkpoints(args.checkpoint)
    evaluation = evaluate(Predictor(models[:1]), args.data, "validation", args.data_dir, thresholds=DEFAULT_THRESHOLDS)
    sweep, tuned = evaluation.threshold_dice, evaluation.best_threshold
    print(f"threshold tuned on validation: {tuned:.2f} (validation contest Dice {sweep[tuned]:.4f}, "
          f"at 0.50: {sweep[0.5]:.4f})")

    configs = [
        ("baseline: 1 model, no TTA, threshold 0.5", dict(models=models[:1]), {}),
        ("TTA flip", dict(models=models[:1], tta="flip"), {}),
        ("TTA d4", dict(models=models[:1], tta="d4"), {}),
        (f"tuned threshold {tuned:.2f}", dict(models=models[:1]), {"threshold": tuned}),
        ("min-area 50 px", dict(models=models[:1]), {"min_area": 50}),
        ("min-area 50 px + fill holes", dict(models=models[:1]), {"min_area": 50, "fill_holes": True}),
    ]
    if len(models) > 1:
        configs += [
            (f"ensemble of {len(models)} (mean)", dict(models=models), {}),
            (f"ensemble of {len(models)} (vote)", dict(models=models, vote=True), {}),
            (f"ensemble + TTA flip + threshold {tuned:.2f} + min-area 50",
             dict(models=models, tta="flip"), {"threshold": tuned, "min_area": 50}),
        ]
    if args.skip_d4:
        configs = [c for c in configs if "d4" not in c[0]]
    print("| configuration | contest Dice | Dice on tiles with buildings | empty tiles kept empty | IoU | seconds |")
    print("|---|---:|---:|---:|---:|---:|")
    out = Path("/tmp/predict_options.csv")
    for label, predictor_args, post in configs:
        start = time.perf_counter()
        items = split_items(open_split(args.data, "test", args.data_dir))
        rule = MaskRule(post.pop("threshold", 0.5), Postprocess(**post))
        write_predictions(Predictor(**predictor_args, rule=rule), items, out)
        seconds = time.perf_counter() - start
        score = score_submission(out, args.truth)
        print(f"| {label} | {score.dice:.4f} | {score.dice_with_buildings:.4f} | "
              f"{score.empty_predicted_empty}/{score.n_truth_empty} | {score.iou:.4f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
