"""Experiment: what TensorFlow's import costs a torch ``buildings fit`` where TensorFlow is installed.

Runs a tiny ``fit`` (U-Net filters 4, 64² crops, 2 steps) in this process with
``buildings.runtime.lazy_tensorflow`` on (the default) or off (Keras imports TensorFlow when seeding and
saving), and prints whether TensorFlow got imported, the wall time and the peak resident memory.
Run each mode in a fresh process:

    python experiments/measure_tensorflow_import.py on  --data tianchi_buildings/val10
    python experiments/measure_tensorflow_import.py off --data tianchi_buildings/val10
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "torch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["on", "off"])
    parser.add_argument("--data", required=True, help="built dataset (name or folder)")
    args = parser.parse_args()
    start = time.perf_counter()
    if args.mode == "off":
        import buildings.runtime.lazy_tensorflow as lazy_tensorflow

        lazy_tensorflow.install = lambda: False
    from buildings.cli import main as cli

    with tempfile.TemporaryDirectory() as folder:
        sys.argv = ["buildings", "fit", "--model", "unet", "--model-option", "filters=4", "--model-option", "depth=2",
                    "--data", args.data, "--image-size", "64", "--batch-size", "2", "--epochs", "1",
                    "--steps-per-epoch", "2", "--eval-batch-size", "4", "--run-dir", os.path.join(folder, "run")]
        try:
            cli()
        except SystemExit as done:
            if done.code:
                raise
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"lazy_tensorflow {args.mode}: TensorFlow imported {'tensorflow' in sys.modules}, "
          f"wall {time.perf_counter() - start:.1f} s, peak resident {peak:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
