"""Benchmark (not a test): Keras-on-torch against the same U-Net written in plain PyTorch, timed
side by side in one process, plus the speed-ups tried on each side.

Run:  KERAS_BACKEND=torch python experiments/native_torch_unet.py [--size 256] [--batch 4] [--steps 8]
          [--filters 16] [--depth 4] [--compile] [--bf16] [--repeats 3]

Same architecture as ``buildings.models.build_model("unet", filters=F, depth=D)``: per level two
3x3 conv (no bias) + BatchNorm (eps 1e-3, momentum 0.9 in Keras terms) + ReLU, 2x2 max-pool, bilinear
2x upsampling (half-pixel centres), concatenation [upsampled, skip], 1x1 head; Glorot-uniform
kernels, zero biases; BCE + Dice (0.8 / 0.2) loss; AdamW (lr 1e-3, weight decay 0.004, eps 1e-7),
Keras's defaults. Runs on the GPU when torch sees one (data kept on the device), else the CPU.

Variants: native eager (NCHW), native channels_last, native torch.compile; Keras as released
(``buildings.runtime.torch_speedups`` off), then each speed-up on its own and together (conv /
pooling without copies, fused BatchNorm), Keras fed torch tensors already on the device instead of
NumPy, and Keras jit_compile=True (torch.compile underneath). The variants are timed in rounds
(``--repeats``), interleaved, and each is reported by its median step time over all rounds, so a
machine that slows down mid-run affects all of them alike. Prints ms/step, images/s and the ratio
to native channels_last eager (the best native eager variant).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1), nn.ReLU())

    def forward(self, x):
        return self.layers(x)


class NativeUNet(nn.Module):
    def __init__(self, filters=16, depth=4):
        super().__init__()
        self.encoders = nn.ModuleList()
        cin = 3
        for level in range(depth):
            self.encoders.append(Block(cin, filters * 2**level))
            cin = filters * 2**level
        self.bottleneck = Block(cin, filters * 2**depth)
        cin = filters * 2**depth
        self.decoders = nn.ModuleList()
        for level in reversed(range(depth)):
            self.decoders.append(Block(cin + filters * 2**level, filters * 2**level))
            cin = filters * 2**level
        self.head = nn.Conv2d(cin, 1, 1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x):
        skips = []
        for block in self.encoders:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for block, skip in zip(self.decoders, reversed(skips), strict=True):
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


def bce_dice(logits, target):
    logits = logits.float().flatten(1)
    target = target.flatten(1)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * target).sum(1) + 1) / (p.sum(1) + target.sum(1) + 1)
    return (0.8 * bce + 0.2 * dice).mean()


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synchronize():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(step, steps) -> list[float]:
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def native(args, x, y, *, channels_last=False, compiled=False):
    """A step function (after one warm-up step) of the plain-PyTorch U-Net."""
    torch.manual_seed(0)
    model = NativeUNet(args.filters, args.depth).to(DEVICE)
    xt = torch.tensor(x, device=DEVICE).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(y, device=DEVICE).permute(0, 3, 1, 2).contiguous()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    forward = torch.compile(model) if compiled else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=args.bf16):
            loss = bce_dice(forward(xt), yt)
        loss.backward()
        optimizer.step()
        return loss

    step()
    return step


def keras_on_torch(args, x, y, *, copies=False, batch_norm=False, tensors=False, jit_compile=False):
    """A step function (after one warm-up step) of the package's U-Net in Keras, with the chosen
    ``torch_speedups`` installed (none: Keras as released)."""
    import keras

    import buildings  # noqa: F401
    from buildings.losses import get_loss
    from buildings.models import build_model
    from buildings.runtime import torch_speedups

    torch_speedups.uninstall()
    torch_speedups.install(copies=copies, batch_norm=batch_norm)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    keras.utils.set_random_seed(0)
    model = build_model("unet", filters=args.filters, depth=args.depth)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), jit_compile=jit_compile)
    if tensors:
        x, y = torch.tensor(x, device=DEVICE), torch.tensor(y, device=DEVICE)

    def step():
        # the variants are interleaved in one process: put this one's speed-ups in place
        if torch_speedups.installed() != {"copies": copies, "batch_norm": batch_norm}:
            torch_speedups.uninstall()
            torch_speedups.install(copies=copies, batch_norm=batch_norm)
        return model.train_on_batch(x, y)

    step()
    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast / mixed_bfloat16")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of --steps steps per variant")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = (rng.random((args.batch, args.size, args.size, 1)) < 0.3).astype("float32")
    import keras

    device = torch.cuda.get_device_name(0) if DEVICE == "cuda" else f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    print(f"U-Net filters {args.filters} depth {args.depth}, batch {args.batch} x {args.size}^2, "
          f"{'bf16' if args.bf16 else 'fp32'}; torch {torch.__version__}, keras {keras.__version__}, "
          f"python {platform.python_version()}, {device}")
    variants = {
        "native PyTorch, NCHW, eager": lambda: native(args, x, y),
        "native PyTorch, channels_last, eager": lambda: native(args, x, y, channels_last=True),
        "Keras on torch, as released": lambda: keras_on_torch(args, x, y),
        "Keras + conv/pool without copies": lambda: keras_on_torch(args, x, y, copies=True),
        "Keras + fused BatchNorm": lambda: keras_on_torch(args, x, y, batch_norm=True),
        "Keras + both (buildings default)": lambda: keras_on_torch(args, x, y, copies=True, batch_norm=True),
        "Keras + both, batches as device tensors": lambda: keras_on_torch(args, x, y, copies=True, batch_norm=True,
                                                                         tensors=True),
    }
    if args.compile:
        variants["native PyTorch, channels_last, torch.compile"] = lambda: native(args, x, y, channels_last=True,
                                                                                 compiled=True)
        variants["Keras + both, jit_compile=True"] = lambda: keras_on_torch(args, x, y, copies=True, batch_norm=True,
                                                                           jit_compile=True)
        # NumPy batches make dynamo break the graph at their conversion; tensors leave only the
        # break Keras makes at loss.backward()
        variants["Keras + both, jit_compile=True, device tensors"] = lambda: keras_on_torch(
            args, x, y, copies=True, batch_norm=True, tensors=True, jit_compile=True)
    steps = {label: make() for label, make in variants.items()}  # build + warm up (compile) each
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(args.repeats):
        for label, step in steps.items():
            times[label] += timed(step, args.steps)
    median = {label: statistics.median(t) for label, t in times.items()}
    reference = median["native PyTorch, channels_last, eager"]
    print("| variant | ms / step (median) | images / s | time vs native channels_last |")
    print("|---|---:|---:|---:|")
    for label, seconds in median.items():
        print(f"| {label} | {1000 * seconds:.0f} | {args.batch / seconds:.1f} | {seconds / reference:.2f}x |")


if __name__ == "__main__":
    main()
