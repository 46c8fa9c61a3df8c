#!/usr/bin/env python3
"""Score the float model at the last epoch of group- or meter-split runs on their held-out meters.

    TF_USE_LEGACY_KERAS=1 python tools/heldout_last_epoch.py /tmp/group-runs/10cls_GRAY/dr ...

The fixed-schedule tables of docs/experiments.md ("Meters the model has never seen") come from this:
runs trained with ``--split-mode group --epochs 40 --qat-epochs 0 --patience 100``, whose last float
checkpoint is scored (not the best validation epoch: the group split leaves 288 validation images,
too few to pick an epoch). Digits are read overall, away from and at tenths x.4/x.5; 100-class
runs also report exact tenths and within 0.1.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from digitrec import export, labels, preprocess, train  # noqa: E402
from digitrec.models import create_model  # noqa: E402


def last_epoch_model(run: Path, cfg: dict):
    import tensorflow as tf

    model = create_model(cfg["model"], int(cfg["classes"]), cfg["color"])
    latest = tf.train.latest_checkpoint(str(run / "float" / "ckpt"))
    if latest is None:
        raise SystemExit(f"{run}/float/ckpt: no checkpoint")
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    return model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path, nargs="+", help="run folders (config.json, float/ckpt)")
    p.add_argument("--data", default=os.environ.get("DIGITREC_DATA"))
    args = p.parse_args()
    if not args.data:
        raise SystemExit("--data (or $DIGITREC_DATA) is required")
    splits = {}
    for run in args.runs:
        cfg = json.loads((run / "config.json").read_text())
        if cfg["split_mode"] not in ("group", "meter"):
            raise SystemExit(f"{run}: split mode {cfg['split_mode']!r}: its test images are not held-out meters")
        key = (cfg["color"], int(cfg["classes"]), cfg["split_mode"])
        if key not in splits:
            splits[key] = train.load_splits(args.data, key[0], key[1], mode=key[2])
        s = splits[key]
        tenths = s.tenths["test"]
        pred = last_epoch_model(run, cfg).predict(preprocess.to_float(s.x["test"]), batch_size=512, verbose=0)
        pred = pred.argmax(axis=1)
        line = f"{run}: {len(tenths)} held-out images"
        if key[1] == 100:
            exact, tol = export.accuracy(pred, tenths, 100)
            line += f", tenths exact {exact:.1%} within 0.1 {tol:.1%}"
            pred = labels.class10_from_class100(pred)
        ok = pred == labels.class10_from_class100(tenths)
        boundary = labels.at_rounding_boundary(tenths)
        print(f"{line}, digits {ok.mean():.1%}, not x.4/x.5 {ok[~boundary].mean():.1%}, "
              f"x.4/x.5 {ok[boundary].mean():.1%} ({boundary.sum()} images)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
