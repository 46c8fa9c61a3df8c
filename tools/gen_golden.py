#!/usr/bin/env python3
"""Write the preprocessing golden vectors (tests/golden/preprocess.json).

Every image is SYNTHETIC (seeded random noise, gradients, extremes), never from the
dataset. Expected outputs come from ``digitrec.preprocess``, the Python reference; the
test ``tests/test_core_native.py`` runs the same raw crops through the firmware's C
preprocessing (``firmware/core/dr_preprocess.c``) and requires identical bytes.

Raw formats follow docs/protocol.md (INFER_RAW): GRAY8 (expanded to R = G = B),
RGB888 (R first), RGB565 (little-endian u16, red in the high 5 bits).

    python tools/gen_golden.py                 # rewrite tests/golden/preprocess.json
    python tools/gen_golden.py --check         # exit 1 if the file is out of date
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import preprocess as pp

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "golden" / "preprocess.json"
SEED = 20240607
FORMATS = {"GRAY8": 0, "RGB888": 1, "RGB565": 2}

# (scale, zero_point): exact 1/255, its float32 rounding (what TFLite stores), ties at
# .5 (2/255), clamping at both ends, and arbitrary values.
QUANTS: list[tuple[float, int]] = [
    (1 / 255, -128),
    (float(np.float32(1 / 255)), -128),
    (2 / 255, -128),
    (0.0078125, 0),
    (float(np.float32(0.0123456789)), -7),
    (0.02, 60),
    (0.0039, -100),
    (float(np.float32(0.00392157)), -127),
]

# (width, height, format): 1x1, identity (20x32), exact 2x down and up, odd sizes,
# the 128 maximum side on either axis, and one maximal square per format budget.
SIZES: list[tuple[int, int, str]] = [
    (1, 1, "GRAY8"), (1, 1, "RGB888"), (1, 1, "RGB565"),
    (20, 32, "GRAY8"), (20, 32, "RGB888"), (20, 32, "RGB565"),
    (40, 64, "RGB888"), (10, 16, "GRAY8"), (10, 16, "RGB565"),
    (7, 3, "RGB888"), (3, 7, "GRAY8"), (33, 17, "RGB565"), (19, 31, "RGB888"), (21, 33, "GRAY8"),
    (2, 1, "RGB888"), (1, 50, "RGB565"), (50, 1, "GRAY8"),
    (128, 5, "RGB888"), (5, 128, "RGB565"), (128, 128, "GRAY8"), (128, 40, "RGB888"), (64, 128, "RGB565"),
]


def synthetic(rng: np.random.Generator, w: int, h: int, kind: int) -> np.ndarray:
    """An HxWx3 uint8 RGB test image: noise, gradient, extremes or blocks."""
    if kind == 0:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind == 1:
        y, x = np.mgrid[0:h, 0:w]
        base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
        return np.clip(base + rng.integers(-3, 4, (h, w, 3)), 0, 255).astype(np.uint8)
    if kind == 2:
        return (rng.integers(0, 2, (h, w, 3)) * 255).astype(np.uint8)  # 0/255 extremes
    coarse = rng.integers(0, 256, ((h + 3) // 4, (w + 3) // 4, 3))
    return np.kron(coarse, np.ones((4, 4, 1), dtype=np.int64))[:h, :w].astype(np.uint8)


def encode_raw(rgb: np.ndarray, fmt: str) -> tuple[bytes, np.ndarray]:
    """RGB image -> (raw bytes in ``fmt``, the RGB888 image the device effectively sees)."""
    if fmt == "GRAY8":
        gray = pp.to_gray(rgb)
        return gray.tobytes(), np.repeat(gray[..., None], 3, axis=-1)
    if fmt == "RGB888":
        return rgb.tobytes(), rgb
    r, g, b = (rgb[..., i].astype(np.uint16) for i in range(3))
    v = ((r >> 3) << 11) | ((g >> 2) << 5) | (b >> 3)
    return v.astype("<u2").tobytes(), pp.rgb565_to_rgb888(v)


def b64(data: bytes | np.ndarray) -> str:
    raw = data.tobytes() if isinstance(data, np.ndarray) else data
    return base64.b64encode(raw).decode()


def build() -> dict[str, Any]:
    rng = np.random.default_rng(SEED)
    images = []
    for i, (w, h, fmt) in enumerate(SIZES):
        raw, rgb = encode_raw(synthetic(rng, w, h, i % 4), fmt)
        expect = []
        for j, color in enumerate(("gray", "rgb")):
            qi = (2 * i + j) % len(QUANTS)
            i8 = pp.to_int8(pp.prepare(rgb, color), pp.Quant(*QUANTS[qi]))
            expect.append({"color": color, "quant": qi, "i8": b64(i8)})
        images.append({"name": f"{fmt.lower()}_{w}x{h}", "fmt": fmt, "width": w, "height": h,
                       "pixels": b64(raw), "expect": expect})
    luts = [b64(pp.quant_lut(pp.Quant(s, z))) for s, z in QUANTS]
    return {
        "about": "Synthetic preprocessing golden vectors; regenerate with tools/gen_golden.py.",
        "seed": SEED, "height": pp.HEIGHT, "width": pp.WIDTH, "formats": FORMATS,
        "quants": [list(q) for q in QUANTS], "luts": luts, "images": images,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="fail if the file differs from a fresh build")
    args = ap.parse_args(argv)
    text = json.dumps(build(), indent=1) + "\n"
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'OUT OF DATE'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(text)} bytes, {len(SIZES)} images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
