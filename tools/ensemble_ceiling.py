#!/usr/bin/env python3
"""How much would more capacity buy? Score an ensemble of shipped models on one split.

Averages the int8 models' class probabilities (LiteRT, no delegates) and prints, per split:
each model's accuracy (read as the bench reads it, ``labels.read_class``), the ensemble's, and how often at least one model is right (an
optimistic bound on what any mix of these models could reach). For 100 classes also
"within 0.1" (off by at most one tenth, circularly), and each model read two other ways:
the argmax of its probabilities smoothed with the two neighbouring tenths, and their
circular mean. Used in docs/benchmarking.md.

    python tools/ensemble_ceiling.py 100cls_GRAY/v9 100cls_GRAY/v12 100cls_GRAY/v15 --split val test
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from digitrec import bench, labels, preprocess

REPO = Path(__file__).resolve().parents[1]


def score(pred: np.ndarray, y: np.ndarray, classes: int) -> str:
    text = f"{100 * np.mean(pred == y):5.1f} %"
    if classes == 100:
        text += f" (within 0.1: {100 * np.mean(labels.within_tolerance(pred, y)):5.1f} %)"
    return text


def other_decodings(p: np.ndarray, y: np.ndarray) -> str:
    """Accuracy of a 100-class model read as a smoothed argmax and as a circular mean."""
    smoothed = p + 0.5 * (np.roll(p, 1, axis=1) + np.roll(p, -1, axis=1))
    angle = np.arange(100) * 2 * np.pi / 100
    mean = np.arctan2(p @ np.sin(angle), p @ np.cos(angle)) % (2 * np.pi)
    circular = np.round(mean / (2 * np.pi) * 100).astype(np.int64) % 100
    return (f"smoothed argmax {100 * np.mean(smoothed.argmax(1) == y):5.1f} %, "
            f"circular mean {100 * np.mean(circular == y):5.1f} %")  # fmt: skip


def run_split(data: bench.DataSource, models: list[bench.Model]) -> None:
    probs, preds, y = [], [], None
    for m in models:
        x_u8, y, _ = data.arrays(m.color, m.classes)
        out = bench.predict_batched(m.data, preprocess.to_int8(x_u8, m.in_q))
        probs.append(m.probabilities(out))
        preds.append(labels.read_class(out))  # the bench's and the firmware's reading of int8 scores
        extra = f"; {other_decodings(probs[-1], y)}" if m.classes == 100 else ""
        print(f"  {m.id:<34} {score(preds[-1], y, m.classes)}{extra}")
    classes = models[0].classes
    ensemble = np.mean(probs, axis=0).argmax(1)
    print(f"  {'ensemble (mean probability)':<34} {score(ensemble, y, classes)}")
    any_right = np.any([p == y for p in preds], axis=0)
    print(f"  {'at least one model right':<34} {100 * any_right.mean():5.1f} %")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="exported model ids, e.g. 100cls_GRAY/v15 (one class count)")
    ap.add_argument("--data", default=os.environ.get("DIGITREC_DATA"), help="dataset root ($DIGITREC_DATA)")
    ap.add_argument("--models-dir", type=Path, default=REPO / "exported_models")
    ap.add_argument("--split", nargs="+", default=["test"], choices=["train", "val", "test"])
    ap.add_argument("--split-mode", default="cluster", choices=["cluster", "group", "meter"])
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("--data (or $DIGITREC_DATA) is required")
    models = [bench.load_model(mid, args.models_dir / mid / "model.tflite") for mid in args.models]
    if len({m.classes for m in models}) != 1:
        ap.error("all models must have the same class count")
    for split in args.split:
        data = bench.DataSource(Path(args.data), split=split, split_mode=args.split_mode)
        print(f"{split} split ({len(data.indices)} images):")
        run_split(data, models)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
