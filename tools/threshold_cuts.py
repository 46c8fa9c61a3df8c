#!/usr/bin/env python3
"""Does a confidence threshold hold on meters the model has never seen? Fixed cuts vs the bench's.

For each models dir (a ``digitrec train --out`` folder, e.g. of ``--split-mode meter`` runs
with different seeds) and each model in it: the test split's fraction answered and accuracy of
the answers at the threshold ``digitrec bench`` would choose (the lowest that reaches the
target on validation) and at fixed top-probability cuts. Several dirs holding the same model
id (seeds) also get a min / median / max line per cut. Used in docs/benchmarking.md.

    python tools/threshold_cuts.py /tmp/meter-s0 /tmp/meter-s1 --split-mode meter
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

import numpy as np

from digitrec import bench, confidence, labels, preprocess

CUTS = (0.6, 0.7, 0.8, 0.85, 0.9)


def confident_right(m: bench.Model, data: bench.DataSource) -> tuple[np.ndarray, np.ndarray]:
    """Top probability and whether the reading is right, per image of ``data``."""
    x_u8, y, _ = data.arrays(m.color, m.classes)
    out = bench.predict_batched(m.data, preprocess.to_int8(x_u8, m.in_q))
    return m.probabilities(out).max(axis=1), labels.read_class(out) == y


def cuts_of(m: bench.Model, test: bench.DataSource, cuts: tuple[float, ...]) -> dict:
    """answered / accuracy of answers on ``test`` at the threshold the bench chooses (its own
    step, on ``test.calibration``: validation) and at each of ``cuts``."""
    conf, right = confident_right(m, test)
    chosen = {"warnings": []}
    bench.confidence_figures(chosen, m, conf, right, test.calibration, bench.Options(plots=False))
    row = {"model": m.id, "accuracy": float(right.mean()), "bench_threshold": chosen["confidence_threshold"],
           "bench": (chosen["answered"], chosen["accuracy_answered"])}
    row["cuts"] = {f"{c:g}": confidence.answered(conf, right, c) for c in cuts}
    return row


def _cell(ans: tuple[float, float | None]) -> str:
    return f"{100 * ans[0]:5.1f} % / " + ("    -  " if ans[1] is None else f"{100 * ans[1]:6.2f} %")


def _spread(values: list[float], digits: int = 2) -> str:
    lo, mid, hi = (100 * v for v in (min(values), statistics.median(values), max(values)))
    return f"{lo:.{digits}f}-{hi:.{digits}f} % (median {mid:.{digits}f})"


def print_rows(rows: list[dict], cuts: tuple[float, ...]) -> None:
    print("answered / accuracy of answers on the test split")
    print(f"{'dir':<24} {'model':<22} {'all':>8} {'bench threshold':>28} "
          + " ".join(f"{'p >= ' + format(c, 'g'):>19}" for c in cuts))
    for r in rows:
        thr = "none" if r["bench_threshold"] is None else f"{r['bench_threshold']:.3f}"
        print(f"{r['dir'][-24:]:<24} {r['model']:<22} {100 * r['accuracy']:6.2f} % {thr:>7} {_cell(r['bench']):>20} "
              + " ".join(f"{_cell(r['cuts'][f'{c:g}']):>19}" for c in cuts))
    for mid in sorted({r["model"] for r in rows}):
        same = [r for r in rows if r["model"] == mid]
        if len(same) < 2:
            continue
        print(f"{mid} over {len(same)} dirs:")
        for key, pick in [("bench threshold", lambda r: r["bench"])] + [
                (f"p >= {c:g}", lambda r, c=c: r["cuts"][f"{c:g}"]) for c in cuts]:
            acc = [pick(r)[1] for r in same if pick(r)[1] is not None]
            ans = [pick(r)[0] for r in same]
            print(f"  {key:<16} answers right {_spread(acc) if acc else '-'}, answered {_spread(ans, 1)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="models dirs (digitrec train --out), e.g. one per seed")
    ap.add_argument("--model", action="append", help="only these model ids or globs (as digitrec bench --model)")
    ap.add_argument("--data", default=os.environ.get("DIGITREC_DATA"), help="dataset root ($DIGITREC_DATA)")
    ap.add_argument("--split-mode", default="cluster", choices=["cluster", "group", "meter"],
                    help="the split the models were trained on (meter: whole meters held out)")
    ap.add_argument("--cuts", nargs="+", type=float, default=list(CUTS), help="fixed top-probability cuts")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args(argv)
    if not args.data:
        ap.error("--data (or $DIGITREC_DATA) is required")
    cuts = tuple(args.cuts)
    test = bench.DataSource(Path(args.data), split="test", split_mode=args.split_mode)
    rows = []
    for d in args.dirs:
        found = bench.discover(d, args.model, None)
        if not found:
            ap.error(f"{d}: no .tflite models found")
        for mid, path in found:
            rows.append({"dir": str(d), **cuts_of(bench.load_model(mid, path), test, cuts)})
    print_rows(rows, cuts)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
