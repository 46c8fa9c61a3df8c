"""The one preprocessing function shared by every stage (and, bit for bit, by the firmware).

Pipeline: decode -> RGB (uint8) -> optional grayscale -> resize to 32x20 -> float or int8.

Every step is integer arithmetic so that the portable C twin in
``firmware/core/dr_preprocess.c`` reproduces it byte for byte (golden vectors prove it):

* Grayscale: ``Y = (77*R + 150*G + 29*B + 128) >> 8`` (BT.601 weights scaled to 256).
  For GRAY models grayscale is applied *before* the resize (cheaper on the chip).
* Resize: "bilinear-q8", bilinear interpolation with half-pixel centres and Q8 fixed point::

      s   = max(0, ((2*d + 1) * src * 256) // (2 * dst) - 128)   # Q8 source coordinate
      i0  = s >> 8, f = s & 255, i1 = min(i0 + 1, src - 1)
      top = p[y0][x0] * (256 - fx) + p[y0][x1] * fx             # same for the bottom row
      out = (top * (256 - fy) + bottom * fy + 32768) >> 16

* Quantize: a 256-entry lookup table computed in IEEE double,
  ``q[p] = clamp(floor(p / 255 / scale + 0.5) + zero_point, -128, 127)``; the float
  model input is ``p / 255`` (in [0, 1]).

RGB565 input (what an ESP32 camera gives) is expanded to RGB888 by bit replication
(``r8 = (r5 << 3) | (r5 >> 2)``, ``g8 = (g6 << 2) | (g6 >> 4)``) before the steps above.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HEIGHT = 32
WIDTH = 20
GRAY_WEIGHTS = (77, 150, 29)  # sum 256
RESIZE_FILTER = "bilinear-q8"


@dataclass(frozen=True)
class Quant:
    """Affine int8 quantization of a tensor: real = scale * (q - zero_point)."""

    scale: float
    zero_point: int


def decode_rgb(data: bytes | Path | str) -> np.ndarray:
    """Decode an image file (bytes or path) to an HxWx3 uint8 RGB array.

    Raises ``ValueError`` naming the problem for empty, truncated or undecodable files.
    """
    from PIL import Image

    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    if not data:
        raise ValueError("empty file")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces a full decode: truncated files fail here
            rgb = img.convert("RGB")  # palette/L/RGBA/BGR-in-BMP all become RGB
            return np.asarray(rgb, dtype=np.uint8).copy()
    except Exception as exc:  # PIL raises many unrelated types
        from PIL import UnidentifiedImageError

        why = "not a recognised image format" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise ValueError(f"cannot decode image: {why}") from exc


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB -> HxW uint8 luma with fixed integer weights (see module doc)."""
    rgb = rgb.astype(np.uint32)
    r, g, b = GRAY_WEIGHTS
    y = (r * rgb[..., 0] + g * rgb[..., 1] + b * rgb[..., 2] + 128) >> 8
    return y.astype(np.uint8)


def rgb565_to_rgb888(pixels: np.ndarray) -> np.ndarray:
    """HxW uint16 RGB565 -> HxWx3 uint8 by bit replication."""
    p = pixels.astype(np.uint16)
    r5, g6, b5 = (p >> 11) & 31, (p >> 5) & 63, p & 31
    out = np.stack([(r5 << 3) | (r5 >> 2), (g6 << 2) | (g6 >> 4), (b5 << 3) | (b5 >> 2)], axis=-1)
    return out.astype(np.uint8)


def _axis_q8(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = np.arange(dst, dtype=np.int64)
    s = np.maximum(0, ((2 * d + 1) * src * 256) // (2 * dst) - 128)
    i0 = s >> 8
    frac = s & 255
    i1 = np.minimum(i0 + 1, src - 1)
    i0 = np.minimum(i0, src - 1)
    return i0, i1, frac


def resize(img: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Resize HxW or HxWxC uint8 with the fixed-point bilinear filter (module doc)."""
    if img.ndim not in (2, 3) or img.shape[0] < 1 or img.shape[1] < 1:
        raise ValueError(f"bad image shape {img.shape}")
    y0, y1, fy = _axis_q8(img.shape[0], height)
    x0, x1, fx = _axis_q8(img.shape[1], width)
    p = img.astype(np.int64)
    if p.ndim == 3:
        fx = fx[:, None]
        fy_b = fy[:, None, None]
    else:
        fy_b = fy[:, None]
    top = p[y0][:, x0] * (256 - fx) + p[y0][:, x1] * fx
    bottom = p[y1][:, x0] * (256 - fx) + p[y1][:, x1] * fx
    out = (top * (256 - fy_b) + bottom * fy_b + 32768) >> 16
    return out.astype(np.uint8)


def prepare(rgb: np.ndarray, color: str) -> np.ndarray:
    """RGB uint8 image of any size -> 32x20xC uint8 (C = 1 for 'gray', 3 for 'rgb')."""
    color = color.lower()
    if color == "gray":
        return resize(to_gray(rgb))[..., None]
    if color == "rgb":
        return resize(rgb)
    raise ValueError(f"color must be 'gray' or 'rgb', not {color!r}")


def quant_lut(q: Quant) -> np.ndarray:
    """The 256-entry uint8-pixel -> int8 table (IEEE double arithmetic, mirrored in C)."""
    p = np.arange(256, dtype=np.float64)
    v = np.floor(p / 255.0 / float(q.scale) + 0.5) + int(q.zero_point)
    return np.clip(v, -128, 127).astype(np.int8)


def to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 model input in [0, 1]."""
    return pixels.astype(np.float32) / np.float32(255.0)


def to_int8(pixels: np.ndarray, q: Quant) -> np.ndarray:
    """uint8 pixels -> int8 model input with the model's own scale and zero point."""
    return quant_lut(q)[pixels]


def preprocess(data: bytes | Path | str | np.ndarray, color: str, quant: Quant | None = None) -> np.ndarray:
    """The full documented path: file or RGB array -> 32x20xC float32 (quant None) or int8."""
    rgb = data if isinstance(data, np.ndarray) else decode_rgb(data)
    pixels = prepare(rgb, color)
    return to_float(pixels) if quant is None else to_int8(pixels, quant)
