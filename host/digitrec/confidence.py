"""Reading with a confidence threshold: answer only when the model is sure enough.

A meter reader does not have to answer every frame: below a confidence threshold it can
keep the previous reading and wait for the next frame, as AI-on-the-edge-device does with
its plausibility checks. The threshold on the model's top probability is chosen on one
split (validation) to reach a target accuracy there, then measured on another (test):
the fraction of images answered and the accuracy of those answers. Choosing and measuring
on the same images would flatter the threshold.
"""

from __future__ import annotations

import numpy as np

# What a threshold aims for: the accuracy targets (digits; exact tenths).
TARGETS: dict[int, float] = {10: 0.995, 100: 0.90}


def threshold_for(conf: np.ndarray, correct: np.ndarray, target: float) -> float | None:
    """The lowest top-probability threshold whose answers (conf >= threshold) reach ``target``.

    The lowest such threshold answers the most images. Candidates are the distinct
    confidence values (int8 outputs tie often), so images of equal confidence are answered
    or refused together. None when not even the most confident images reach the target.
    """
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool)
    if conf.shape != correct.shape or conf.ndim != 1:
        raise ValueError(f"conf {conf.shape} and correct {correct.shape} must be equal 1-D shapes")
    values, inverse = np.unique(-conf, return_inverse=True)  # distinct confidences, highest first
    right = np.cumsum(np.bincount(inverse, weights=correct, minlength=len(values)))
    answered = np.cumsum(np.bincount(inverse, minlength=len(values)))
    ok = np.flatnonzero(right / np.maximum(answered, 1) >= target)
    return None if len(ok) == 0 else float(-values[ok[-1]])


def answered(conf: np.ndarray, correct: np.ndarray, threshold: float | None) -> tuple[float, float | None]:
    """(fraction answered, accuracy of the answers) at ``threshold`` (None answers nothing)."""
    conf, correct = np.asarray(conf), np.asarray(correct, dtype=bool)
    keep = conf >= threshold if threshold is not None else np.zeros(len(conf), dtype=bool)
    n = int(keep.sum())
    return n / max(1, len(conf)), (float(correct[keep].mean()) if n else None)


def coverage_curve(conf: np.ndarray, correct: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy of the most confident answers against the fraction answered (for a plot)."""
    order = np.argsort(-np.asarray(conf), kind="stable")
    acc = np.cumsum(np.asarray(correct, dtype=float)[order]) / np.arange(1, len(order) + 1)
    at = np.unique(np.linspace(1, len(order), points).round().astype(int)) - 1
    return (at + 1) / len(order), acc[at]
