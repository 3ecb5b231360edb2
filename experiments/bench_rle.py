"""Benchmark (not a test): buildings.formats.rle against the RLE code contest notebooks commonly use.

Run:  python experiments/bench_rle.py [--data ../shared/data/barnarp] [--repeat 7]

Times encode and decode over every non-empty mask of the barnarp sample (real aerial masks),
validation switched on in buildings.formats.rle (it always is), and prints both times and the ratio.
Targets from issue 2: decode >= 2x faster, encode >= 1.0x.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from buildings.formats.rle import decode_rle, encode_rle  # noqa: E402


# ---- the baseline: as written in the Tianchi course notebooks ------------------------------
def baseline_encode(img):
    pixels = img.flatten(order="F")
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def baseline_decode(mask_rle, shape=(512, 512)):
    s = mask_rle.split()
    starts, lengths = [np.asarray(x, dtype=int) for x in (s[0:][::2], s[1:][::2])]
    starts -= 1
    ends = starts + lengths
    img = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    for lo, hi in zip(starts, ends):
        img[lo:hi] = 1
    return img.reshape(shape, order="F")
# ----------------------------------------------------------------------------------------------


def load_rles(data: Path) -> list[str]:
    with zipfile.ZipFile(data / "train_mask.csv.zip") as archive:
        text = archive.read("train_mask.csv").decode()
    text += (data / "test_a_mask.csv").read_text()
    return [line.split("\t")[1] for line in text.splitlines() if line.split("\t")[1]]


def best_time(fn, items, repeat: int) -> float:
    """Best of ``repeat`` passes over all items, in microseconds per item."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for item in items:
            fn(item)
        times.append(time.perf_counter() - start)
    return min(times) / len(items) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "barnarp"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rles = load_rles(args.data)
    masks = [np.ascontiguousarray(decode_rle(r)) for r in rles]  # C-ordered, as a model outputs
    for rle, mask in zip(rles, masks):  # both implementations agree before timing
        assert baseline_encode(mask) == encode_rle(mask) == rle
        assert (baseline_decode(rle) == decode_rle(rle)).all()
    runs = statistics.mean(len(r.split()) // 2 for r in rles)
    print(f"{len(rles)} non-empty barnarp masks, 512x512, mean {runs:.0f} runs; "
          f"python {platform.python_version()}, numpy {np.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'':8}{'baseline us':>13}{'buildings us':>14}{'speed-up':>10}")
    for label, base, ours, items in (
        ("decode", baseline_decode, decode_rle, rles),
        ("encode", baseline_encode, encode_rle, masks),
    ):
        t_base = best_time(base, items, args.repeat)
        t_ours = best_time(ours, items, args.repeat)
        print(f"{label:8}{t_base:13.1f}{t_ours:14.1f}{t_base / t_ours:9.2f}x")


if __name__ == "__main__":
    main()
