"""Experiment (issue 26, item 2): the CPU recipe under a short wall-time cap, around its unfreezing.

For every cap in ``--minutes``, on barnarp laid out as the contest download (val10):

    buildings fit --config cpu-quick --max-minutes M --seed S --data tianchi_buildings/val10 --run-dir RUN
    buildings predict --checkpoint RUN/best.keras --split test --out RUN/submission.csv   (no tuning)
    buildings score --json RUN/submission.csv BARNARP/test_a_mask.csv

and from RUN/history.csv: the validation contest Dice of each epoch with its phase (F frozen, U
unfrozen), the best epoch before unfreezing, the epoch best.keras holds and the last one, whether
the encoder was unfrozen at all (a cap that leaves fewer than ``phases.MIN_UNFROZEN_EPOCHS`` after
the frozen epochs keeps it frozen) and the planned epochs.

    python experiments/capped_unfreeze.py [--minutes 6,4] [--seed 0] [--out /tmp/capped]

One JSON row per cap on stdout and in OUT/rows.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import BARNARP, DATA, timed  # noqa: E402


def run_one(minutes: float, seed: int, out: Path, data_dir: Path) -> dict:
    run = out / f"cap{minutes:g}-seed{seed}"
    log = out / f"cap{minutes:g}-seed{seed}.log"
    data = ["--data", DATA, "--data-dir", str(data_dir)]
    fit_out, fit_s = timed(["buildings", "fit", "--config", "cpu-quick", "--max-minutes", f"{minutes:g}", "--seed",
                            str(seed), *data, "--run-dir", str(run)], log)
    submission = run / "submission.csv"
    timed(["buildings", "predict", "--checkpoint", str(run / "best.keras"), *data, "--split", "test", "--out",
           str(submission)], log)
    scored, _ = timed(["buildings", "score", "--json", str(submission), str(BARNARP / "test_a_mask.csv")], log)
    history = pd.read_csv(run / "history.csv")
    summary = json.loads((run / "summary.json").read_text())
    frozen = history[history["phase"] == 0]
    freeze = json.loads((run / "config.json").read_text())["options"]["freeze_encoder_epochs"]
    before = history[history["epoch"] <= freeze]  # the epochs before the unfreezing (or where it would be)
    kept = [line for line in fit_out.splitlines() if "stays frozen" in line]
    return {"minutes": minutes, "seed": seed, "epochs_run": int(len(history)),
            "planned_epochs": [int(v) for v in history.get("planned_epochs", pd.Series(dtype=float)).dropna()],
            "unfrozen": bool((history["phase"] > 0).any()), "frozen_epochs": int(len(frozen)),
            "kept_frozen_line": kept[0] if kept else None,
            "val_per_epoch": [f"{'F' if p == 0 else 'U'} {v:.3f}" for p, v in zip(history["phase"],
                                                                               history["val_contest_dice"], strict=True)],
            "best_before_unfreezing": float(before["val_contest_dice"].max()),
            "best_val_dice": summary.get("best_val_contest_dice"), "best_epoch": summary.get("best_epoch"),
            "last_val_dice": float(history["val_contest_dice"].iloc[-1]),
            "test_a_dice": json.loads(scored.strip().splitlines()[-1])["dice"], "fit_s": round(fit_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="6,4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/capped"))
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "tfds"
    if not (data_dir / "tianchi_buildings").exists():
        timed(["buildings", "data", "build", "--manual-dir", str(BARNARP), "--config", "val10", "--data-dir",
               str(data_dir)], out / "build.log")
    for minutes in [float(m) for m in args.minutes.split(",")]:
        row = run_one(minutes, args.seed, out, data_dir)
        with open(out / "rows.jsonl", "a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
