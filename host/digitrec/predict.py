"""`digitrec predict`: read your own meter's crops with an exported model (no labels needed).

Each image gets the model's reading (the digit, or the reading in tenths for a 100-class
model), its confidence (the top probability), and whether that clears a confidence
threshold: the one `digitrec bench` chose for this model on validation (looked up in its
bench.json by the model's SHA-256), or `--threshold`. The crops take the preprocessing the
bench and the firmware use (docs/architecture.md); the int8 model runs in LiteRT without
delegates, as in the bench. Files that cannot be decoded are reported and skipped.

With ``--port`` the same crops also go to a board (or ``virtual``) running that model, raw, so
the chip's own preprocessing reads them as it would on the meter: each row then shows the
board's reading too and whether it agrees with the PC. The link is the device bench's
(retries, resets re-sent); if the board is lost, the PC readings and the answers so far are
still printed and written.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitrec.device import DEFAULT_WINDOW, positive_int
from digitrec.protocol import DEFAULT_BAUD

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
    tensor: np.ndarray | None = field(default=None, repr=False)  # the int8 input the PC read
    scores: list[int] = field(default_factory=list, repr=False)  # the PC's int8 output
    device_reading: str = ""  # with --port: the board's answer ("" when unanswered)
    device_confidence: float | None = None
    device_error: str = ""  # the board's error reply, if it refused this crop
    device_sent: str = ""  # "raw:<FORMAT>" (the chip preprocessed it) or "tensor" (too large to send raw)

    @property
    def agrees(self) -> bool | None:
        """Board and PC give the same reading (None without a board answer)."""
        return None if not self.device_reading else self.device_reading == self.reading


def find_images(paths: list[Path]) -> list[Path]:
    """Image files named directly, or found under the named folders (sorted), each once."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    seen: set[Path] = set()
    unique = []
    for f in found:  # a file named twice (directly and in its folder) is read once
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique


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
        for i, c, p, t, sc in zip(ok, classes, probs, x, scores, strict=True):
            r = out[i]
            r.reading, r.confidence = bench.label_text(int(c), m.classes), float(p.max())
            r.tensor, r.scores = t, [int(v) for v in sc]
            r.sure = None if threshold is None else r.confidence >= threshold
    return out


def read_on_device(m: Model, readings: list[Reading], port: str, baud: int, window: int,
                   progress: bool = True) -> str:
    """Send every read crop raw to the board on ``port`` (``virtual`` starts one) and fill in
    its readings. Returns "" when every crop was answered, else why the board stopped."""
    from tqdm import tqdm

    from digitrec import bench, device, labels
    from digitrec import protocol as P

    dm = device.Model(m.path.parent, m.data, m.card or {"name": m.id, "color": m.color}, m.sha256)
    todo = {str(r.path.resolve()): r for r in readings if not r.error}
    # paths are absolute, so the payload builder's root is the filesystem's
    work = [device.Work(path, -1, labels.read_class(r.scores), r.scores, r.tensor,
                        sent=device.raw_plan(Path("/"), path, dm.color, "auto")) for path, r in todo.items()]
    for w in work:
        todo[w.path].device_sent = w.sent
    bar = tqdm(total=len(work), unit="img", desc="board", disable=not progress)

    def on_row(w: device.Work, reply: P.Result | P.ErrorReply) -> None:
        bar.update(1)
        r = todo[w.path]
        if not isinstance(reply, P.Result):
            r.device_error = f"{reply.name}: {reply.message}"
        else:
            r.device_reading = bench.label_text(int(reply.cls), m.classes)
            r.device_confidence = float(m.probabilities(np.array([reply.scores]))[0].max())

    def on_info(info: dict) -> None:
        device.check_device(info, dm)
        bar.write(f"board reset detected (boot_id {info.get('boot_id')}); re-sending requests in flight")

    try:
        with device.sigterm_as_ctrl_c(), device.session(port, dm, baud) as (link, info):
            timeout = device.default_timeout(window, baud or P.DEFAULT_BAUD, P.MAX_PAYLOAD + P.OVERHEAD)
            budget = int(info.get("rx_buffer") or device.MAX_INFLIGHT_BYTES)
            s = device.Streamer(link, Path("/"), window, timeout, info.get("boot_id"), on_row, on_info, budget)
            s.run(work, dead_after=max(10.0, 8 * timeout))
    except KeyboardInterrupt:
        return "interrupted"
    except (device.DeviceError, OSError, ValueError) as exc:  # OSError, ValueError: a crop gone since read
        return str(exc)
    finally:
        bar.close()
    return ""


def write_csv(readings: list[Reading], path: Path, board: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "reading", "confidence", "sure", "error"]
                   + (["device_reading", "device_confidence", "agrees", "device_error", "device_sent"] if board else []))
        for r in readings:
            row = [r.path.as_posix(), r.reading, _num(r.confidence), _flag(r.sure), r.error]
            if board:
                row += [r.device_reading, _num(r.device_confidence), _flag(r.agrees), r.device_error, r.device_sent]
            w.writerow(row)


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def _flag(v: bool | None) -> str | int:
    return "" if v is None else int(v)


def print_readings(readings: list[Reading], threshold: float | None, show: int, board: bool = False) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="Readings" + ("" if threshold is None else f" (sure: confidence >= {threshold:.3f})"))
    for col in ("file", "reading", "confidence", "sure") + (("board", "agrees") if board else ()):
        t.add_column(col)
    for r in readings[:show]:
        conf = "" if r.confidence is None else f"{r.confidence:.3f}"
        sure = "" if r.sure is None else ("yes" if r.sure else "no")
        cells = [r.path.name, r.reading or f"skipped: {r.error}", conf, sure]
        if board:
            agrees = "" if r.agrees is None else ("yes" if r.agrees else "NO")
            answer = r.device_reading or (f"error: {r.device_error}" if r.device_error else "")
            cells += [answer or ("" if r.error else "no answer"), agrees]
        t.add_row(*cells)
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
    if board:
        answered = [r for r in read if r.device_reading]
        differ = sum(r.agrees is False for r in answered)
        as_tensor = sum(r.device_sent == "tensor" for r in answered)
        summary += (f"; the board answered {len(answered)} of {len(read)}, {differ} differently from the PC"
                    + (f" ({as_tensor} too large to send raw went as the PC's tensor)" if as_tensor else ""))
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
    if args.threshold is None and threshold is not None:
        print(f"threshold {threshold:.3f} from {args.bench}: chosen on meters training has seen; on a meter the "
              "model has never seen a higher --threshold keeps the accuracy (docs/benchmarking.md, "
              "'On meters never seen in training')")
    readings = read_images(m, files, threshold, progress=not args.quiet)
    for r in readings:
        if r.error:
            print(f"skipped {r.path}: {r.error}", file=sys.stderr)
    board = args.port is not None
    stopped = read_on_device(m, readings, args.port, args.baud, args.window, not args.quiet) if board else ""
    print_readings(readings, threshold, args.show, board)
    if args.csv:
        write_csv(readings, Path(args.csv), board)
        print(f"wrote {args.csv}")
    if stopped:
        print(f"error: board on {args.port}: {stopped}. The PC readings and the board's answers so far "
              f"are above" + (f" and in {args.csv}" if args.csv else "") + ".", file=sys.stderr)
        return 130 if stopped == "interrupted" else 3
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
    p.add_argument("--port", help="also read them on a board running this model ('virtual': the virtual "
                   "device), sending the crops raw so the chip preprocesses them; see docs/device.md")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"baud rate with --port (default {DEFAULT_BAUD}; virtual: 0 unpaced)")
    p.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW,
                   help=f"requests in flight with --port (default {DEFAULT_WINDOW})")
    p.add_argument("--csv", help="write every reading to this CSV file")
    p.add_argument("--show", type=int, default=40, help="rows to print (default 40)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
