"""`digitrec predict`: read your own meter's crops with an exported model (no labels needed).

Each image gets the model's reading (the digit, or the reading in tenths for a 100-class
model), its confidence (the top probability), and whether that clears a confidence
threshold: the one `digitrec bench` chose for this model on validation (looked up in its
bench.json by the model's SHA-256), or `--threshold`. The crops take the preprocessing the
bench and the firmware use (docs/architecture.md); the int8 model runs in LiteRT without
delegates, as in the bench. Files that cannot be decoded are reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from digitrec.bench import Model

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_BENCH = Path("reports/bench/bench.json")


@dataclass
class Reading:
    path: Path
    reading: str = ""  # "4" (10 classes) or "4.6" (100 classes); "" when skipped
    confidence: float | None = None
    sure: bool | None = None  # None without a threshold
    error: str = ""


def find_images(paths: list[Path]) -> list[Path]:
    """Image files named directly, or found under the named folders (sorted)."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return found


def bench_threshold(bench_json: Path, sha256: str) -> float | None:
    """The confidence threshold `digitrec bench` chose for the model with this SHA-256, if any."""
    if not bench_json.is_file():
        return None
    for r in json.loads(bench_json.read_text()):  # one row per model
        if r.get("sha256") == sha256 and r.get("confidence_threshold") is not None:
            return float(r["confidence_threshold"])
    return None


def read_images(m: Model, files: list[Path], threshold: float | None, progress: bool = True) -> list[Reading]:
    """Read every file with model `m`; undecodable files come back with `error`."""
    from tqdm import tqdm

    from digitrec import bench, labels, preprocess

    out = [Reading(f) for f in files]
    x, ok = [], []
    for i, r in enumerate(tqdm(out, desc="decoding", unit="img", disable=not progress)):
        try:
            x.append(preprocess.preprocess(r.path, m.color, m.in_q))
            ok.append(i)
        except (OSError, ValueError) as exc:
            r.error = str(exc)
    if ok:
        scores = bench.predict_batched(m.data, np.stack(x))
        classes, probs = labels.read_class(scores), m.probabilities(scores)  # read_class takes int8
        for i, c, p in zip(ok, classes, probs, strict=True):
            r = out[i]
            r.reading, r.confidence = bench.label_text(int(c), m.classes), float(p.max())
            r.sure = None if threshold is None else r.confidence >= threshold
    return out


def write_csv(readings: list[Reading], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reading", "confidence", "sure", "error"])
        for r in readings:
            conf = "" if r.confidence is None else f"{r.confidence:.4f}"
            sure = "" if r.sure is None else int(r.sure)
            w.writerow([r.path.as_posix(), r.reading, conf, sure, r.error])


def print_readings(readings: list[Reading], threshold: float | None, show: int) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Readings" + ("" if threshold is None else f" (sure: confidence >= {threshold:.3f})"))
    for col in ("file", "reading", "confidence", "sure"):
        t.add_column(col)
    for r in readings[:show]:
        conf = "" if r.confidence is None else f"{r.confidence:.3f}"
        sure = "" if r.sure is None else ("yes" if r.sure else "no")
        t.add_row(r.path.name, r.reading or f"skipped: {r.error}", conf, sure)
    console = Console(width=120)
    if show > 0:
        console.print(t)
    if len(readings) > show:
        console.print(f"... {len(readings) - show} more (--show N, or --csv FILE for all)")
    read = [r for r in readings if not r.error]
    summary = f"{len(read)} of {len(readings)} images read, {len(readings) - len(read)} skipped"
    if threshold is not None and read:
        sure = sum(bool(r.sure) for r in read)
        summary += f"; {sure} sure ({100 * sure / len(read):.1f} %)"
    console.print(summary)


def run(args: argparse.Namespace) -> int:
    from digitrec.bench import BenchError, load_model
    from digitrec.device import DeviceError, resolve_model

    try:
        model_dir = resolve_model(args.model)
        m = load_model(model_dir.name, model_dir / "model.tflite")
    except (DeviceError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    files = find_images([Path(p) for p in args.images])
    if not files:
        print(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {', '.join(args.images)}", file=sys.stderr)
        return 2
    threshold = args.threshold if args.threshold is not None else bench_threshold(Path(args.bench), m.sha256)
    readings = read_images(m, files, threshold, progress=not args.quiet)
    for r in readings:
        if r.error:
            print(f"skipped {r.path}: {r.error}", file=sys.stderr)
    print_readings(readings, threshold, args.show)
    if args.csv:
        write_csv(readings, Path(args.csv))
        print(f"wrote {args.csv}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="read your own crops with an exported model (no labels needed)",
        description="Read image files (or folders of them) with an exported int8 model: reading, "
        "confidence, and whether it clears the confidence threshold the bench chose.",
    )
    p.add_argument("images", nargs="+", help="image files or folders (.jpg, .jpeg, .png, .bmp; folders recursively)")
    p.add_argument("--model", default="10cls_GRAY/dr", help="model dir, or a name under exported_models/*/ "
                   "(default 10cls_GRAY/dr)")
    p.add_argument("--threshold", type=float, default=None,
                   help="confidence threshold (0-1); default: the one in --bench for this model, else none")
    p.add_argument("--bench", default=str(DEFAULT_BENCH), help=f"bench JSON to take the threshold from "
                   f"(default {DEFAULT_BENCH}, written by make bench)")
    p.add_argument("--csv", help="write every reading to this CSV file")
    p.add_argument("--show", type=int, default=40, help="rows to print (default 40)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
