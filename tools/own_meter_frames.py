#!/usr/bin/env python3
"""How much do a few labelled frames of your own meter help? Measured on the meter split.

Each held-out meter folder gives whole near-duplicate clusters, in a seeded random order,
to training until at least ``--frames`` of its images moved; the rest of the folder stays
held out, with no near-copy of a moved frame. A model trained with that extra data (the
model's shipped recipe, the meter-split schedule of docs/experiments.md) and a baseline
trained on the plain meter split with the same settings are then scored on the same
remaining frames, per folder. Used in docs/experiments.md ("A few frames of your own meter").

    python tools/own_meter_frames.py --model v15 --classes 100 --frames 50 \\
        --baseline /tmp/meter/100cls_GRAY/v15/model.tflite --out /tmp/own50 -- --teacher none
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from digitrec import bench, data, labels, preprocess, train  # noqa: E402
from digitrec.cli import build_parser  # noqa: E402

SCHEDULE = ["--split-mode", "meter", "--epochs", "40", "--patience-after", "1.0", "--qat-epochs", "6",
            "--float-weights", "last"]


def own_frames_split(ds: data.Dataset, frames: int, seed: int, repeat: int = 1) -> dict[str, list[int]]:
    """The meter split with at least ``frames`` images of each held-out folder moved to training,
    as whole clusters, so no remaining test image has a near-copy among them; each moved image
    appears ``repeat`` times in training, weighted as `digitrec train --repeat-folder` weighs a folder."""
    if repeat < 1:
        raise ValueError(f"repeat {repeat}: must be at least 1")
    split = {k: list(v) for k, v in ds.split("meter").items()}
    members: dict[int, list[int]] = defaultdict(list)  # a cluster may span folders of one meter
    by_folder: dict[str, set[int]] = defaultdict(set)
    for i in split["test"]:
        members[ds.items[i].cluster].append(i)
        by_folder[ds.items[i].group].add(ds.items[i].cluster)
    rng = np.random.default_rng(seed)
    moved: set[int] = set()
    for folder in sorted(by_folder):
        taken = sum(ds.items[i].group == folder for i in moved)
        for c in rng.permutation(sorted(by_folder[folder])):
            if taken >= frames:
                break
            if members[c][0] not in moved:
                moved.update(members[c])
                taken += sum(ds.items[i].group == folder for i in members[c])
    split["train"] += sorted(moved)
    split["test"] = [i for i in split["test"] if i not in moved]
    return train.repeated_folders(ds, split, {}, {i: repeat for i in moved})[0]


def score(tflite: Path, ds: data.Dataset, test: list[int], classes: int, color: str) -> dict[str, float]:
    """Per held-out folder and overall: exact accuracy and, for 100 classes, the digit read from the tenth."""
    m = bench.load_model(str(tflite), tflite)
    x, y, _ = ds.arrays(test, color, classes)
    pred = labels.read_class(bench.predict_batched(m.data, preprocess.to_int8(x, m.in_q)))
    right = pred == y
    out = {"all": float(right.mean())}
    if classes == 100:
        out["all (digit)"] = float(np.mean(labels.class10_from_class100(pred) == labels.class10_from_class100(y)))
    groups = np.array([ds.items[i].group for i in test])
    for g in sorted(set(groups)):
        out[g] = float(right[groups == g].mean())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--classes", type=int, choices=(10, 100), default=10)
    ap.add_argument("--color", choices=("gray", "rgb"), default="gray")
    ap.add_argument("--frames", type=int, default=50, help="at least this many frames of each held-out folder")
    ap.add_argument("--repeat", type=int, default=1, help="each moved frame appears this many times in training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline", type=Path, required=True, help="model.tflite trained on the plain meter split")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", default=os.environ.get("DIGITREC_DATA"), help="dataset root ($DIGITREC_DATA)")
    ap.add_argument("train_flags", nargs="*", help="after --: more `digitrec train` flags, e.g. --teacher none")
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("--data (or $DIGITREC_DATA) is required")
    if not args.baseline.is_file():
        ap.error(f"--baseline {args.baseline}: no such file")
    targs = build_parser().parse_args(["train", "--model", args.model, "--classes", str(args.classes), "--color",
                                       args.color, "--seed", str(args.seed), *SCHEDULE, *args.train_flags])
    cfg = train.config_from_args(targs, args.model, args.classes, args.color)
    ds = data.load_dataset(args.data)
    split = own_frames_split(ds, args.frames, args.seed, args.repeat)
    mode = f"meter+own{args.frames}" + (f"x{args.repeat}" if args.repeat > 1 else "")
    splits = train.splits_from(ds, split, args.color, args.classes, mode)
    card = train.train_model(cfg, splits, args.out / "ship", args.out / "runs")
    adapted = args.out / "ship" / f"{args.classes}cls_{args.color.upper()}" / args.model / "model.tflite"
    rows = {"baseline": score(args.baseline, ds, split["test"], args.classes, args.color),
            "with own frames": score(adapted, ds, split["test"], args.classes, args.color)}
    moved = len(set(split["train"])) - len(ds.split("meter")["train"])
    report = {"frames": args.frames, "repeat": args.repeat, "seed": args.seed, "moved": moved,
              "remaining": len(split["test"]), "model": card["name"], "accuracy": rows}
    (args.out / "own_frames.json").write_text(json.dumps(report, indent=1))
    print(f"{report['moved']} frames moved to training, {report['remaining']} held-out frames remain")
    print(f"| held-out folder | baseline | with >= {args.frames} own frames |\n| --- | --- | --- |")
    for key in rows["baseline"]:
        print(f"| {key} | {100 * rows['baseline'][key]:.1f} % | {100 * rows['with own frames'][key]:.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
