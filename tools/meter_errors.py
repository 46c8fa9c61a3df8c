"""Where a 10-class model goes wrong on the test split, per meter folder: at the x.4/x.5
rounding boundary, off by one digit elsewhere, or off by two digits or more (a misread digit).

    python tools/meter_errors.py MODEL.tflite [--split-mode meter] [--data DIR]

A 100-class model is read as digits (its tenth rounded half up, as the bench does).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "host"))

from digitrec import bench, labels, preprocess  # noqa: E402
from digitrec.data import SPLIT_MODES  # noqa: E402


def error_kinds(pred10: np.ndarray, y10: np.ndarray, tenths: np.ndarray) -> dict[str, int]:
    """Counts of images, errors, errors at x.4/x.5, off by one digit elsewhere, off by two or more."""
    wrong = pred10 != y10
    boundary = labels.at_rounding_boundary(tenths)
    off = np.abs((pred10 - y10 + 5) % 10 - 5)
    return {
        "images": int(len(y10)),
        "wrong": int(wrong.sum()),
        "boundary": int((wrong & boundary).sum()),
        "off1": int((wrong & ~boundary & (off == 1)).sum()),
        "off2plus": int((wrong & ~boundary & (off >= 2)).sum()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an exported model.tflite (its card.json beside it)")
    p.add_argument("--split-mode", choices=SPLIT_MODES, default="meter")
    p.add_argument("--data", default=os.environ.get("DIGITREC_DATA", "../shared/datasets/haverland"))
    args = p.parse_args(argv)

    split = bench.DataSource(Path(args.data), "test", args.split_mode)  # meters as the bench's meters.csv
    model = bench.load_model("model", Path(args.model))
    x, _, _ = split.arrays(model.color, model.classes)
    tenths, meters = split.tenths(), np.asarray(split.meters(), dtype=object)
    y10 = labels.class10_from_class100(tenths)
    pred = labels.read_class(bench.predict_batched(model.data, preprocess.to_int8(x, model.in_q)))
    pred10 = labels.class10_from_class100(pred) if model.classes == 100 else pred

    print("| meter folder | images | errors | at x.4/x.5 | off by 1 elsewhere | off by 2+ |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in sorted(set(meters)):
        sel = meters == name
        k = error_kinds(pred10[sel], y10[sel], tenths[sel])
        print(f"| `{name}` | {k['images']} | {k['wrong']} | {k['boundary']} | {k['off1']} | {k['off2plus']} |")
    k = error_kinds(pred10, y10, tenths)
    print(f"| all | {k['images']} | {k['wrong']} | {k['boundary']} | {k['off1']} | {k['off2plus']} |")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
