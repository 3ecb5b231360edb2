"""Benchmark (not a test): Keras-on-torch against the same U-Net written in plain PyTorch, timed
side by side in one process, plus the speed-ups tried on each side.

Run:  KERAS_BACKEND=torch python experiments/native_torch_unet.py [--size 256] [--batch 4] [--steps 8]
          [--filters 16] [--depth 4] [--compile] [--bf16]

Same architecture as ``buildings.models.build_model("unet", filters=F, depth=D)``: per level two
3x3 conv (no bias) + BatchNorm (eps 1e-3, momentum 0.9 in Keras terms) + ReLU, 2x2 max-pool, bilinear
2x upsampling (half-pixel centres), concatenation [upsampled, skip], 1x1 head; Glorot-uniform
kernels, zero biases; BCE + Dice (0.8 / 0.2) loss; AdamW (lr 1e-3, weight decay 0.004, eps 1e-7),
Keras's defaults. Variants: native eager (NCHW), native channels_last, native torch.compile;
Keras eager, Keras jit_compile=True (torch.compile underneath). Prints ms/step and images/s.
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


def time_steps(step, steps):
    step()  # warm-up (and compilation)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def native(args, x, y, *, channels_last=False, compiled=False):
    torch.manual_seed(0)
    model = NativeUNet(args.filters, args.depth)
    xt = torch.tensor(x).permute(0, 3, 1, 2).contiguous()
    yt = torch.tensor(y).permute(0, 3, 1, 2).contiguous()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        xt = xt.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.004, eps=1e-7)
    forward = torch.compile(model) if compiled else model

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = bce_dice(forward(xt), yt)
        loss.backward()
        optimizer.step()
        return loss

    return time_steps(step, args.steps)


def keras_on_torch(args, x, y, *, jit_compile=False):
    import keras

    import buildings  # noqa: F401
    from buildings.losses import get_loss
    from buildings.models import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    keras.utils.set_random_seed(0)
    model = build_model("unet", filters=args.filters, depth=args.depth)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), jit_compile=jit_compile)
    return time_steps(lambda: model.train_on_batch(x, y), args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast / mixed_bfloat16")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch, args.size, args.size, 3)).astype("float32")
    y = (rng.random((args.batch, args.size, args.size, 1)) < 0.3).astype("float32")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"U-Net filters {args.filters} depth {args.depth}, batch {args.batch} x {args.size}^2, "
          f"{'bf16' if args.bf16 else 'fp32'}; torch {torch.__version__}, python {platform.python_version()}, {device}")
    rows = [("native PyTorch, NCHW, eager", native(args, x, y)),
            ("native PyTorch, channels_last, eager", native(args, x, y, channels_last=True))]
    if args.compile:
        rows.append(("native PyTorch, channels_last, torch.compile", native(args, x, y, channels_last=True, compiled=True)))
    rows.append(("Keras on torch, eager", keras_on_torch(args, x, y)))
    if args.compile:
        rows.append(("Keras on torch, jit_compile=True", keras_on_torch(args, x, y, jit_compile=True)))
    reference = rows[0][1]
    print("| variant | ms / step | images / s | time vs native eager |")
    print("|---|---:|---:|---:|")
    for label, seconds in rows:
        print(f"| {label} | {1000 * seconds:.0f} | {args.batch / seconds:.1f} | {seconds / reference:.2f}x |")


if __name__ == "__main__":
    main()
