"""Labels from haverland file names, the 10/100-class mapping and the tolerance metric.

Convention (dataset README): ``4.6_<anything>.jpg`` is a reading of 4.6 and
``4_<anything>.jpg`` is 4.0. The label is the file name up to the first ``_`` (or the
whole stem when there is none). Names starting with ``10_`` or ``N`` are not labelled
digits. Float noise from old export scripts (``2.3000000000000003``) is accepted when
the value is within 0.01 of a tenth.

* 100 classes: ``round(value * 10)`` in 0..99.
* 10 classes: the nearest digit, half up, mod 10 (x.0-x.4 -> x, x.5-x.9 -> x+1, 9.5 -> 0).
"""

from __future__ import annotations

import re

import numpy as np

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class LabelError(ValueError):
    """A file name that carries no usable label."""


def parse_label(filename: str) -> float:
    """Reading encoded in a file name, e.g. ``'4.6_x.jpg'`` -> 4.6. Raises LabelError."""
    stem = filename.rsplit("/", 1)[-1]
    stem = stem.rsplit(".", 1)[0] if "." in stem and "_" not in stem else stem
    prefix = stem.split("_", 1)[0]
    if prefix.startswith("N"):
        raise LabelError(f"not a labelled digit (N prefix): {filename}")
    if prefix == "10":
        raise LabelError(f"not a labelled digit (10_ prefix): {filename}")
    if not _NUMBER.fullmatch(prefix):
        raise LabelError(f"no parseable label in name: {filename}")
    value = float(prefix)
    tenths = round(value * 10)
    if abs(value * 10 - tenths) > 0.01:
        raise LabelError(f"label {prefix} is not a multiple of 0.1: {filename}")
    if not 0 <= tenths <= 99:
        raise LabelError(f"label {prefix} out of range 0.0..9.9: {filename}")
    return tenths / 10


def class100(value: float) -> int:
    """Tenths class 0..99 of a reading."""
    return int(round(value * 10)) % 100


def class10_from_class100(c100: int | np.ndarray) -> int | np.ndarray:
    """Nearest digit, rounding half up, modulo 10 (45 -> 5, 95 -> 0, 44 -> 4)."""
    return ((c100 + 5) // 10) % 10


def tenths_to_digits() -> np.ndarray:
    """100 x 10 float32 0/1 matrix: ``p100 @ tenths_to_digits()`` sums each digit's tenths."""
    digit = class10_from_class100(np.arange(100))
    return (digit[:, None] == np.arange(10)[None, :]).astype(np.float32)


def class10(value: float) -> int:
    return int(class10_from_class100(class100(value)))


def label_for(value: float, classes: int) -> int:
    if classes == 100:
        return class100(value)
    if classes == 10:
        return class10(value)
    raise ValueError(f"classes must be 10 or 100, not {classes}")


def at_rounding_boundary(c100: np.ndarray) -> np.ndarray:
    """True for tenths x.4 and x.5, where the 10-class label flips on one tenth of label noise."""
    return np.isin(np.asarray(c100) % 10, (4, 5))


def circular_distance(pred100: np.ndarray, true100: np.ndarray) -> np.ndarray:
    """Distance in tenths on the 100-step dial (99 and 0 are neighbours)."""
    d = np.abs(np.asarray(pred100, dtype=np.int64) - np.asarray(true100, dtype=np.int64)) % 100
    return np.minimum(d, 100 - d)


def within_tolerance(pred100: np.ndarray, true100: np.ndarray, tol: int = 1) -> np.ndarray:
    """True where a 100-class prediction is within ``tol`` tenths of the label, circularly."""
    return circular_distance(pred100, true100) <= tol


def read_class(scores: np.ndarray) -> np.ndarray:
    """The class an int8 output reads as: its maximum; ties go to the class whose two circular
    neighbours score more, then to the lower index. Same rule as the firmware's dr_read_class.

    An int8 softmax output has steps of 1/256, so the top two tenths of a 100-class model tie
    on a few % of images; plain argmax would always pick the lower tenth there.
    """
    s = np.asarray(scores, dtype=np.int64)
    s = s - s.min(axis=-1, keepdims=True)  # >= 0, at most 255 for int8
    around = np.roll(s, 1, axis=-1) + np.roll(s, -1, axis=-1)  # <= 510 < 1024
    return (s * 1024 + around).argmax(axis=-1)
