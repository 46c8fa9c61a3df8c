"""`digitrec bench`: PC benchmark of the exported int8 models, with tables, plots and reports.

Per model: accuracy on a split of the dataset (exact; within 0.1 circularly for 100
classes), per-class accuracy, confusion matrix, worst-mistakes gallery, size figures
(from the model card, measured when missing) and PC speed (batch-1, labelled PC).

Accuracy is evaluated with the interpreter's input tensor resized to a batch (one
``invoke`` per BATCH images) on the data stage's cached uint8 arrays (each image is
decoded once per run, not once per model). A batch-1 loop on a sample of the same
images gives the PC speed, checks that the batched outputs agree exactly, and is
extrapolated to the whole split to report the speed-up of batching.

See docs/benchmarking.md for what each figure means.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import hashlib
import json
import os
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import confidence, labels, preprocess
from digitrec.data import SPLIT_MODES
from digitrec.preprocess import Quant

REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "exported_models"
REPORT_DIR = REPO_ROOT / "reports" / "bench"
BUDGETS_KB = (32, 64, 100, 256)  # KB = 1024 bytes
BATCH = 8  # measured: best or near best for the zoo; from ~64 up activations fall out of cache and get slower
LOOP_SAMPLE = 500  # images per model in the batch-1 loop (speed, agreement, extrapolation)
E2E_SAMPLE = 200  # decoded images per run for the end-to-end (preprocess + invoke) speed
GALLERY = 24  # worst mistakes shown per model
SPLITS = ("test", "val", "train", "all")
DIR_PATTERN = re.compile(r"^(10|100)cls_(GRAY|RGB)$")

PUBLISHED_NOTE = "published (earlier project, on its own training data)"
# As published by the earlier project; its test data differ from ours, so these rows
# are context, never a like-for-like comparison. size_kb as printed there.
PUBLISHED: list[dict[str, Any]] = [
    {"model": "v4", "classes": 10, "color": "GRAY", "accuracy": 0.985, "size_kb": 61.4},
    {"model": "v4", "classes": 100, "color": "GRAY", "accuracy": 0.829, "size_kb": None},
    {"model": "v16", "classes": 100, "color": "GRAY", "accuracy": 0.884, "size_kb": 139.5},
]

# Row keys in output order; the first ones are the stable schema later tools rely on.
ROW_KEYS = [
    "model", "classes", "color", "images", "accuracy", "accuracy_tol", "size_bytes", "params",
    "arena_bytes", "macs", "pc_inf_per_s", "pc_e2e_per_s", "pc_batched_inf_per_s", "accuracy_digit",
    "accuracy_digit_clear", "accuracy_digit_boundary",
    "confidence_target", "confidence_threshold", "confidence_threshold_int8", "answered", "accuracy_answered",
    "name", "family", "path", "sha256", "ops", "interpreter", "threads", "split", "split_mode",
    "data_fingerprint", "data_match", "card_accuracy", "batched", "batch_agrees", "cache_agrees",
    "loop_images", "eval_s", "loop_est_s", "eval_cpu_s", "loop_est_cpu_s", "speedup",
    "per_class_accuracy", "sources", "confusion_png", "mistakes_png", "warnings", "error",
]  # fmt: skip


class BenchError(Exception):
    """A problem with one model (message names the file); the others still run."""


# ----------------------------------------------------------------------------- metrics


def accuracy_metrics(pred: np.ndarray, y: np.ndarray, classes: int, y100: np.ndarray | None = None) -> dict[str, Any]:
    """Exact accuracy; for 100 classes also within-0.1 (circular) and the digit accuracy.

    ``accuracy_digit`` maps both prediction and label to the 10-class digit (nearest,
    half up, mod 10) so 10- and 100-class models can be compared on one scale. With the
    tenths labels ``y100`` it is also split into images at the rounding boundary (tenth
    x.4 or x.5, where the digit label hinges on one tenth of label noise) and the rest.
    """
    pred = np.asarray(pred, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if len(y) == 0:
        return {"accuracy": None, "accuracy_tol": None, "accuracy_digit": None, "accuracy_digit_clear": None,
                "accuracy_digit_boundary": None, "per_class_accuracy": []}
    exact = float(np.mean(pred == y))
    tol = digit = None
    if classes == 100:
        tol = float(np.mean(labels.within_tolerance(pred, y)))
        digit = float(np.mean(labels.class10_from_class100(pred) == labels.class10_from_class100(y)))
    else:
        digit = exact
    per_class = [float(np.mean(pred[y == c] == c)) if np.any(y == c) else None for c in range(classes)]
    clear = boundary = None
    if y100 is not None:
        ok = (labels.class10_from_class100(pred) if classes == 100 else pred) == labels.class10_from_class100(y100)
        at = labels.at_rounding_boundary(y100)
        clear = float(np.mean(ok[~at])) if np.any(~at) else None
        boundary = float(np.mean(ok[at])) if np.any(at) else None
    return {"accuracy": exact, "accuracy_tol": tol, "accuracy_digit": digit, "accuracy_digit_clear": clear,
            "accuracy_digit_boundary": boundary, "per_class_accuracy": per_class}


def per_meter_accuracy(pred: np.ndarray, y: np.ndarray, classes: int, meters: list[str]) -> list[dict[str, Any]]:
    """Images, exact, within-0.1 (100 classes) and digit accuracy per meter folder, by name."""
    pred, y, folder = np.asarray(pred, np.int64), np.asarray(y, np.int64), np.asarray(meters, dtype=object)
    rows = []
    for meter in sorted(set(meters)):
        sel = folder == meter
        a = accuracy_metrics(pred[sel], y[sel], classes)
        rows.append({"meter": meter, "images": int(sel.sum()), "accuracy": a["accuracy"],
                     "accuracy_tol": a["accuracy_tol"], "accuracy_digit": a["accuracy_digit"]})
    return rows


def confusion(pred: np.ndarray, y: np.ndarray, classes: int) -> np.ndarray:
    """classes x classes counts, rows = label, columns = prediction."""
    idx = np.asarray(y, dtype=np.int64) * classes + np.asarray(pred, dtype=np.int64)
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes)


def probabilities(out: np.ndarray, q: Quant, softmax_output: bool) -> np.ndarray:
    """Dequantized scores; softmax applied when the graph does not end in SOFTMAX."""
    v = (out.astype(np.float32) - q.zero_point) * np.float32(q.scale)
    if softmax_output:
        return v
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def worst_mistakes(pred: np.ndarray, y: np.ndarray, conf: np.ndarray, classes: int, n: int) -> np.ndarray:
    """Indices of the worst mistakes: outside tolerance first (100 classes), then most confident."""
    wrong = np.flatnonzero(pred != y)
    if classes == 100:
        far = ~labels.within_tolerance(pred[wrong], y[wrong])
    else:
        far = np.ones(len(wrong), dtype=bool)
    order = np.lexsort((-conf[wrong], ~far))  # last key is primary
    return wrong[order[:n]]


def label_text(c: int, classes: int) -> str:
    return f"{c / 10:.1f}" if classes == 100 else str(c)


# ----------------------------------------------------------------------------- models


@dataclass
class Model:
    """One .tflite with its card, checked against each other and against the data contract."""

    id: str
    path: Path
    data: bytes
    sha256: str
    classes: int
    color: str  # GRAY | RGB
    in_q: Quant
    out_q: Quant
    ops: list[str]
    card: dict[str, Any] | None
    macs: int | None = None
    params: int | None = None
    warnings: list[str] = field(default_factory=list)

    outputs_probabilities: bool = True  # see ends_in_probabilities

    def probabilities(self, out: np.ndarray) -> np.ndarray:
        """Dequantized class scores of raw int8 outputs (softmax applied if the graph outputs logits)."""
        return probabilities(out, self.out_q, self.outputs_probabilities)


def discover(
    models_dir: Path, include: list[str] | None, exclude: list[str] | None
) -> list[tuple[str, Path]]:
    """(id, .tflite path) of every model under models_dir, filtered by globs or explicit paths.

    The id is the model folder relative to models_dir (``10cls_GRAY/v4``); globs match the
    id or the folder name.
    """
    found: dict[str, Path] = {}
    for p in sorted(models_dir.rglob("*.tflite")) if models_dir.is_dir() else []:
        found[model_id(p, models_dir)] = p
    if include:
        picked: dict[str, Path] = {}
        for pat in include:
            given = Path(pat)
            if given.exists():  # an explicit folder or .tflite outside the globbing
                for p in [given] if given.is_file() else sorted(given.rglob("*.tflite")):
                    picked[model_id(p, models_dir)] = p
                continue
            picked.update({k: v for k, v in found.items() if _match(k, pat)})
        found = picked
    return [(k, v) for k, v in sorted(found.items()) if not any(_match(k, pat) for pat in exclude or [])]


def model_id(tflite: Path, models_dir: Path) -> str:
    folder = tflite.parent if tflite.name == "model.tflite" else tflite.with_suffix("")
    try:
        return folder.resolve().relative_to(models_dir.resolve()).as_posix()
    except ValueError:
        return folder.as_posix()


def _match(mid: str, pat: str) -> bool:
    return fnmatch.fnmatch(mid, pat) or fnmatch.fnmatch(mid.rsplit("/", 1)[-1], pat)


def make_interpreter(data: bytes, xnnpack: bool = False, threads: int = 1) -> Any:
    """LiteRT interpreter; without default delegates unless xnnpack (matches TFLM arithmetic)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return Interpreter(model_content=data, experimental_op_resolver_type=kind, num_threads=threads)


def interpreter_label(xnnpack: bool, threads: int) -> str:
    from importlib.metadata import version

    kind = "XNNPACK" if xnnpack else "builtin kernels, no delegates"
    return f"LiteRT {version('ai-edge-litert')} ({kind}, {threads} thread{'s' * (threads > 1)})"


def load_model(mid: str, path: Path) -> Model:
    """Read and check one model; raises BenchError naming the file on any problem."""
    data = path.read_bytes() if path.is_file() else b""
    if not data:
        raise BenchError(f"{path}: empty or missing file")
    try:
        it = make_interpreter(data)
        it.allocate_tensors()
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError for bad flatbuffers
        raise BenchError(f"{path}: not a valid TFLite model ({exc})") from exc
    ins, outs = it.get_input_details(), it.get_output_details()
    if len(ins) != 1 or len(outs) != 1:
        raise BenchError(f"{path}: expected 1 input and 1 output, found {len(ins)} and {len(outs)}")
    inp, out = ins[0], outs[0]
    shape, oshape = [int(v) for v in inp["shape"]], [int(v) for v in out["shape"]]
    h, w = preprocess.HEIGHT, preprocess.WIDTH
    if inp["dtype"] != np.int8 or len(shape) != 4 or shape[1:3] != [h, w] or shape[3] not in (1, 3):
        raise BenchError(
            f"{path}: input {inp['dtype'].__name__} {shape} does not fit the data (int8 [1, {h}, {w}, 1|3])"
        )
    if out["dtype"] != np.int8 or len(oshape) != 2 or oshape[1] not in (10, 100):
        raise BenchError(
            f"{path}: output {out['dtype'].__name__} {oshape} does not fit the labels (int8 [1, 10|100])"
        )
    op_details = it._get_ops_details()
    ops = [o["op_name"] for o in op_details]
    m = Model(
        id=mid, path=path, data=data, sha256=hashlib.sha256(data).hexdigest(), classes=oshape[1],
        color="GRAY" if shape[3] == 1 else "RGB", in_q=Quant(*inp["quantization"]),
        out_q=Quant(*out["quantization"]), ops=ops, card=None,
        outputs_probabilities=ends_in_probabilities(op_details, int(out["index"])),
    )  # fmt: skip
    m.macs, m.params = graph_stats(it)
    m.card = load_card(path)
    check_card(m)
    check_folder(m)
    return m


def ends_in_probabilities(op_details: list[dict[str, Any]], output: int) -> bool:
    """Whether the output tensor holds probabilities: made by SOFTMAX, or by the FULLY_CONNECTED
    of a digit-sum head that adds up a SOFTMAX's tenths (``models._blocks.digit_sum_head``)."""
    made_by = {int(t): o for o in op_details for t in o["outputs"]}
    last = made_by.get(output)
    if last is None:
        return False
    if last["op_name"] == "SOFTMAX":
        return True
    feeder = made_by.get(int(last["inputs"][0]))
    return last["op_name"] == "FULLY_CONNECTED" and feeder is not None and feeder["op_name"] == "SOFTMAX"


def graph_stats(it: Any) -> tuple[int, int]:
    """(MACs, weights) of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED at batch 1, from the graph."""
    shapes = {t["index"]: [int(v) for v in t["shape"]] for t in it.get_tensor_details()}
    macs = params = 0
    for op in it._get_ops_details():
        name, ins = op["op_name"], [int(i) for i in op["inputs"]]
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") or len(ins) < 2:
            continue
        out = shapes[int(op["outputs"][0])]
        filt = shapes[ins[1]]
        params += int(np.prod(filt)) + (int(np.prod(shapes[ins[2]])) if len(ins) > 2 and ins[2] >= 0 else 0)
        if name == "CONV_2D":  # out: 1 x H x W x Cout, filter: Cout x kh x kw x Cin
            macs += int(np.prod(out[1:])) * int(np.prod(filt[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # filter: 1 x kh x kw x Cout
            macs += int(np.prod(out[1:])) * filt[1] * filt[2]
        else:  # filter: out x in
            macs += filt[0] * filt[1]
    return macs, params


def load_card(path: Path) -> dict[str, Any] | None:
    card_path = path.parent / "card.json"
    if not card_path.is_file():
        return None
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"{card_path}: unreadable model card ({exc})") from exc
    if not isinstance(card, dict):
        raise BenchError(f"{card_path}: model card is not a JSON object")
    return card


def check_card(m: Model) -> None:
    """The card must describe this very .tflite: hash, bytes, classes, colour, shapes, quantization."""
    card = m.card
    if card is None:
        m.warnings.append("no card.json: sizes measured from the .tflite")
        return
    want_shape = [preprocess.HEIGHT, preprocess.WIDTH, 1 if m.color == "GRAY" else 3]
    inp, out = card.get("input") or {}, card.get("output") or {}
    checks = [
        ("sha256", card.get("sha256"), m.sha256),
        ("tflite_bytes", card.get("tflite_bytes"), len(m.data)),
        ("classes", card.get("classes"), m.classes),
        ("color", str(card.get("color", "")).upper() or None, m.color),
        ("input.shape", _shape(inp.get("shape")), want_shape),
        ("output.shape", _shape(out.get("shape")), [m.classes]),
    ]
    bad = [f"{k} {c!r} != {v!r}" for k, c, v in checks if c is not None and c != v]
    for k, q, side in (("input", m.in_q, inp), ("output", m.out_q, out)):
        if "scale" in side and not np.isclose(float(side["scale"]), q.scale, rtol=1e-5, atol=0):
            bad.append(f"{k}.scale {side['scale']} != {q.scale}")
        if "zero_point" in side and int(side["zero_point"]) != q.zero_point:
            bad.append(f"{k}.zero_point {side['zero_point']} != {q.zero_point}")
    if bad:
        raise BenchError(
            f"{m.path.parent / 'card.json'}: card disagrees with {m.path.name}: " + "; ".join(bad)
        )
    if card.get("ops") and sorted(set(card["ops"])) != sorted(set(m.ops)):
        m.warnings.append(f"card ops {sorted(set(card['ops']))} differ from the graph's {sorted(set(m.ops))}")


def _shape(v: Any) -> list[int] | None:
    if v is None:
        return None
    shape = [int(d) for d in v]
    return shape[1:] if len(shape) in (2, 4) and shape[0] == 1 else shape  # tolerate a batch dim


def check_folder(m: Model) -> None:
    """A model in exported_models/<N>cls_<COLOR>/ must have that class count and colour."""
    folder = m.path.parent.parent.name if m.path.name == "model.tflite" else m.path.parent.name
    hit = DIR_PATTERN.match(folder)
    if hit and (int(hit.group(1)), hit.group(2)) != (m.classes, m.color):
        raise BenchError(f"{m.path}: lives in {folder}/ but is a {m.classes}-class {m.color} model")


def card_value(m: Model, key: str, measured: Any, sources: dict[str, str]) -> Any:
    """Card figure when present, else the measured one; records where it came from."""
    if m.card is not None and m.card.get(key) is not None:
        sources[key] = "card"
        return m.card[key]
    sources[key] = "measured" if measured is not None else "missing"
    return measured


def tflm_arena_bytes(data: bytes) -> int | None:
    """The export stage's measurement (TFLM bisection in a child process: TFLM may crash, not raise)."""
    try:
        from digitrec.export import measure_arena

        return int(measure_arena(data))
    except Exception:  # missing figure, not a failed benchmark: the row says "missing"
        return None


# ----------------------------------------------------------------------------- inference


def predict_batched(
    data: bytes, x: np.ndarray, batch: int = BATCH, xnnpack: bool = False, threads: int = 1
) -> np.ndarray:
    """int8 outputs for all of x, BATCH images per invoke (input tensor resized to the batch)."""
    it = make_interpreter(data, xnnpack, threads)
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    b = max(1, min(batch, len(x)))
    it.resize_tensor_input(inp, [b, *x.shape[1:]], strict=False)
    it.allocate_tensors()
    result: np.ndarray | None = None
    pad = np.zeros((b, *x.shape[1:]), dtype=np.int8)
    for s in range(0, len(x), b):
        chunk = x[s : s + b]
        if len(chunk) < b:  # keep one allocation: pad the tail batch, drop its rows
            pad[: len(chunk)] = chunk
            chunk = pad
        it.set_tensor(inp, chunk)
        it.invoke()
        res = it.get_tensor(out)
        if res.shape[0] != b or res.ndim != 2:
            raise BenchError(f"batched output shape {list(res.shape)} for batch {b}")
        if result is None:
            result = np.empty((len(x), res.shape[1]), dtype=res.dtype)
        n = min(b, len(x) - s)
        result[s : s + n] = res[:n]
    return result if result is not None else np.empty((0, 0), dtype=np.int8)


@dataclass
class LoopResult:
    outputs: np.ndarray
    invoke_times: np.ndarray  # seconds per invoke()
    loop_s: float  # whole loop: set_tensor + invoke + get_tensor per image

    @property
    def invoke_s(self) -> float:
        return float(self.invoke_times.sum())


def per_second(times: np.ndarray) -> float | None:
    """1 / median seconds per call: robust to other processes stealing the shared CPU."""
    return 1.0 / float(np.median(times)) if len(times) and np.median(times) > 0 else None


def predict_loop(it: Any, x: np.ndarray, warmup: int = 5) -> LoopResult:
    """The batch-1 per-image loop on an allocated batch-1 interpreter."""
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    for i in range(min(warmup, len(x))):
        it.set_tensor(inp, x[i : i + 1])
        it.invoke()
    outs = []
    times = np.empty(len(x))
    t_start = time.perf_counter()
    for i in range(len(x)):
        it.set_tensor(inp, x[i : i + 1])
        t0 = time.perf_counter()
        it.invoke()
        times[i] = time.perf_counter() - t0
        outs.append(it.get_tensor(out)[0].copy())
    loop_s = time.perf_counter() - t_start
    return LoopResult(np.stack(outs) if outs else np.empty((0, 0), np.int8), times, loop_s)


def time_e2e(it: Any, images: list[np.ndarray], color: str, q: Quant) -> tuple[np.ndarray, list[np.ndarray]]:
    """Seconds per image for decoded RGB -> preprocess -> int8 -> invoke -> scores (batch 1); the inputs."""
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    inputs, times = [], np.empty(len(images))
    for i, rgb in enumerate(images):
        t0 = time.perf_counter()
        x = preprocess.preprocess(rgb, color, q)
        it.set_tensor(inp, x[None])
        it.invoke()
        it.get_tensor(out)
        times[i] = time.perf_counter() - t0
        inputs.append(x)
    return times, inputs


# ----------------------------------------------------------------------------- data


class DataSource:
    """The split's cached uint8 arrays per (colour, classes), loaded once per run."""

    def __init__(
        self, root: Path, split: str = "test", split_mode: str = "cluster", cache_dir: Path | None = None,
        dataset: Any = None,
    ):  # fmt: skip
        from digitrec.data import load_dataset

        self.root = Path(root)
        self.split, self.split_mode = split, split_mode
        t0 = time.perf_counter()
        self.ds = dataset or load_dataset(self.root, cache_dir=cache_dir, progress=sys.stderr.isatty())
        self.load_s = time.perf_counter() - t0
        parts = self.ds.split(mode=split_mode) if split != "all" else {}
        # "all": every usable image (duplicates collapsed, conflicting labels left out)
        self.indices = list(self.ds.usable) if split == "all" else list(parts[split])
        self.fingerprint = str(self.ds.fingerprint)
        self._arrays: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._rgb: list[np.ndarray] | None = None
        self._tenths: np.ndarray | None = None
        self.decode_s: float | None = None
        # where confidence thresholds are chosen: validation, only when this is the test split
        self.calibration = DataSource(root, "val", split_mode, dataset=self.ds) if split == "test" else None

    def arrays(self, color: str, classes: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        key = (color.lower(), classes)
        if key not in self._arrays:
            x, y, paths = self.ds.arrays(self.indices, color=key[0], classes=classes)
            self._arrays[key] = (np.asarray(x), np.asarray(y, dtype=np.int64), [str(p) for p in paths])
        return self._arrays[key]

    def tenths(self) -> np.ndarray:
        """100-class labels of the split's images, in the order of ``arrays``."""
        if self._tenths is None:
            self._tenths = self.ds.tenths(self.indices)
        return self._tenths

    def sample_rgb(self, n: int) -> tuple[list[int], list[np.ndarray]]:
        """Positions (in the split) and decoded RGB of an evenly spaced sample (decoded once)."""
        pos = sample_positions(len(self.indices), n)
        if self._rgb is None:
            t0 = time.perf_counter()
            self._rgb = [preprocess.decode_rgb(self.image_path(p)) for p in pos]
            self.decode_s = (time.perf_counter() - t0) / max(1, len(pos))
        return pos, self._rgb

    def image_path(self, pos: int) -> Path:
        return Path(self.ds.root) / self.ds.items[self.indices[pos]].path

    def meters(self) -> list[str]:
        """The meter folder (group) of each of the split's images, in the order of ``arrays``."""
        return [self.ds.items[i].group for i in self.indices]


def sample_positions(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({int(v) for v in np.linspace(0, n - 1, k)})


# ----------------------------------------------------------------------------- one model


@dataclass
class Options:
    xnnpack: bool = False
    threads: int = 1
    batch: int = BATCH
    loop_sample: int = LOOP_SAMPLE
    e2e_sample: int = E2E_SAMPLE
    plots: bool = True
    report_dir: Path = REPORT_DIR


def empty_row(mid: str, path: Path) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(ROW_KEYS)
    row.update(model=mid, path=_rel(path), warnings=[], sources={})
    return row


def bench_model(mid: str, path: Path, data: DataSource, opt: Options) -> dict[str, Any]:
    """One row; any problem becomes row["error"] (naming the file) instead of an exception."""
    row = empty_row(mid, path)
    try:
        m = load_model(mid, path)
        fill_static(row, m, data, opt)
        evaluate(row, m, data, opt)
    except BenchError as exc:
        row["error"] = str(exc)
    except Exception as exc:  # an unexpected failure of one model must not stop the zoo
        row["error"] = f"{path}: {type(exc).__name__}: {exc}"
    return row


def fill_static(row: dict[str, Any], m: Model, data: DataSource, opt: Options) -> None:
    card = m.card or {}
    src: dict[str, str] = {}
    row.update(
        name=card.get("name", m.id.rsplit("/", 1)[-1]), family=card.get("family"), classes=m.classes,
        color=m.color, sha256=m.sha256, size_bytes=len(m.data),
        params=card_value(m, "params", m.params, src), macs=card_value(m, "macs", m.macs, src),
        ops=card.get("ops") or m.ops, interpreter=interpreter_label(opt.xnnpack, opt.threads),
        threads=opt.threads, split=data.split, split_mode=data.split_mode, data_fingerprint=data.fingerprint,
        card_accuracy=(card.get("accuracy") or {}).get("int8_test"), warnings=list(m.warnings),
    )  # fmt: skip
    src["size_bytes"] = "file"
    src["ops"] = "card" if card.get("ops") else "measured"
    arena = card.get("arena_bytes")
    if arena is None:
        arena = tflm_arena_bytes(m.data)
        src["arena_bytes"] = "missing" if arena is None else "measured (tflite-micro bisection)"
    else:
        src["arena_bytes"] = "card"
    row["arena_bytes"] = arena
    row["sources"] = src
    card_data = card.get("data") or {}
    row["_card_test_images"] = card_data.get("test")  # internal: not a ROW_KEY, not written
    if card_data.get("fingerprint"):
        row["data_match"] = (
            card_data["fingerprint"] == data.fingerprint
            and card_data.get("split_mode", data.split_mode) == data.split_mode
        )
        if not row["data_match"] and data.split != "all":
            row["warnings"].append(
                "trained on another data version or split mode: the split may overlap training"
            )


def evaluate(row: dict[str, Any], m: Model, data: DataSource, opt: Options) -> None:
    x_u8, y, paths = data.arrays(m.color, m.classes)
    if len(y) == 0:
        raise BenchError(f"{m.path}: the {data.split} split has no images")
    if x_u8.shape[1:] != (preprocess.HEIGHT, preprocess.WIDTH, 1 if m.color == "GRAY" else 3):
        raise BenchError(f"{m.path}: data arrays {x_u8.shape[1:]} do not fit the model input")
    x = preprocess.to_int8(x_u8, m.in_q)
    it = make_interpreter(m.data, opt.xnnpack, opt.threads)
    it.allocate_tensors()
    out, eval_s, eval_cpu = run_batched(row, m, x, it, opt)
    pos = sample_positions(len(x), opt.loop_sample)
    c0 = time.process_time()
    loop = predict_loop(it, x[pos])
    loop_cpu = time.process_time() - c0
    row["batch_agrees"] = bool(np.array_equal(loop.outputs, out[pos]))
    if not row["batch_agrees"]:
        raise BenchError(f"{m.path}: batched and per-image outputs differ")
    scale = len(x) / len(pos)  # extrapolate the loop sample to the whole split
    row.update(
        images=len(y), loop_images=len(pos), eval_s=eval_s, loop_est_s=loop.loop_s * scale,
        eval_cpu_s=eval_cpu, loop_est_cpu_s=loop_cpu * scale, pc_inf_per_s=per_second(loop.invoke_times),
        pc_batched_inf_per_s=len(x) / eval_s if eval_s > 0 else None,
        speedup=loop_cpu * scale / eval_cpu if eval_cpu > 0 else None,
    )  # fmt: skip
    e2e_pos, rgb = data.sample_rgb(opt.e2e_sample)
    if rgb:
        e2e_times, inputs = time_e2e(it, rgb, m.color, m.in_q)
        row["pc_e2e_per_s"] = per_second(e2e_times)
        row["_e2e_mean_s"] = float(e2e_times.mean())  # internal: for the file-loop estimate
        row["cache_agrees"] = all(np.array_equal(a, x[p]) for a, p in zip(inputs, e2e_pos, strict=True))
        if not row["cache_agrees"]:
            row["warnings"].append("cached arrays differ from preprocess.preprocess() on the decoded files")
    pred = labels.read_class(out).astype(np.int64)
    row.update(accuracy_metrics(pred, y, m.classes, data.tenths()))
    row["_meters"] = per_meter_accuracy(pred, y, m.classes, data.meters())
    conf = m.probabilities(out).max(axis=1)
    if data.calibration is not None:
        confidence_figures(row, m, conf, pred == y, data.calibration, opt)
    check_card_accuracy(row)
    if opt.plots:
        write_model_plots(row, m, pred, y, conf, data, opt.report_dir)


def confidence_figures(
    row: dict[str, Any], m: Model, conf: np.ndarray, correct: np.ndarray, calibration: DataSource, opt: Options
) -> None:
    """Answer only above a top-probability threshold chosen on the calibration split (validation)
    to reach the class count's target there; measured here (test, whose top probabilities and
    right answers are ``conf`` and ``correct``): fraction answered, accuracy."""
    xv, yv, _ = calibration.arrays(m.color, m.classes)
    if len(yv) == 0:
        row["warnings"].append("the validation split is empty: no confidence threshold")
        return
    out_v = predict_batched(m.data, preprocess.to_int8(xv, m.in_q), opt.batch, opt.xnnpack, opt.threads)
    target = confidence.TARGETS[m.classes]
    threshold = confidence.threshold_for(m.probabilities(out_v).max(axis=1), labels.read_class(out_v) == yv, target)
    row["answered"], row["accuracy_answered"] = confidence.answered(conf, correct, threshold)
    row.update(confidence_target=target, confidence_threshold=threshold)
    # the same cut on the raw int8 output the device reports; a logit output has no such cut
    if threshold is not None and m.outputs_probabilities:
        row["confidence_threshold_int8"] = int(round(threshold / m.out_q.scale + m.out_q.zero_point))
    row["_coverage_curve"] = confidence.coverage_curve(conf, correct)  # internal: for the plot


def run_batched(
    row: dict[str, Any], m: Model, x: np.ndarray, it1: Any, opt: Options
) -> tuple[np.ndarray, float, float]:
    """Outputs for all of x, wall and CPU seconds; the batch-1 loop if the graph cannot batch."""
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        out = predict_batched(m.data, x, opt.batch, opt.xnnpack, opt.threads)
        row["batched"] = True
    except Exception as exc:  # e.g. a graph with a hard-coded batch of 1: fall back, say so
        row["warnings"].append(f"batched evaluation failed ({exc}); used the batch-1 loop")
        out, row["batched"] = predict_loop(it1, x).outputs, False
    return out, time.perf_counter() - t0, time.process_time() - c0


def check_card_accuracy(row: dict[str, Any]) -> None:
    """Same data, same split, same kernels: the card's int8 test accuracy must be reproduced."""
    card_acc = row.get("card_accuracy")
    same_images = row.get("_card_test_images") == row["images"]  # training may use --limit
    if row.get("data_match") and row["split"] == "test" and card_acc is not None and same_images:
        if abs(card_acc - row["accuracy"]) > 0.5 / max(1, row["images"]):
            row["warnings"].append(f"card int8_test {card_acc:.4f} != measured {row['accuracy']:.4f}")


# ----------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def slug(mid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "__", mid)


def write_model_plots(
    row: dict[str, Any],
    m: Model,
    pred: np.ndarray,
    y: np.ndarray,
    conf: np.ndarray,
    data: DataSource,
    out_dir: Path,
) -> None:
    folder = out_dir / "models"
    folder.mkdir(parents=True, exist_ok=True)
    cpath = folder / f"{slug(m.id)}_confusion.png"
    plot_confusion(confusion(pred, y, m.classes), m.id, cpath)
    row["confusion_png"] = cpath.relative_to(out_dir).as_posix()
    worst = worst_mistakes(pred, y, conf, m.classes, GALLERY)
    if len(worst):
        gpath = folder / f"{slug(m.id)}_mistakes.png"
        items = [(data.image_path(int(i)), int(y[i]), int(pred[i]), float(conf[i])) for i in worst]
        plot_mistakes(items, m.classes, f"{m.id}: worst mistakes ({data.split} split)", gpath)
        row["mistakes_png"] = gpath.relative_to(out_dir).as_posix()


def plot_confusion(cm: np.ndarray, title: str, path: Path) -> None:
    """Row-normalised confusion matrix (each label row sums to 1); counts written for 10 classes."""
    plt = _plt()
    k = cm.shape[0]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5, 4.4) if k <= 10 else (8, 7.2), dpi=90)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if k <= 10:
        for (i, j), c in np.ndenumerate(cm):
            if c:
                ax.text(
                    j,
                    i,
                    str(c),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ticks, names = np.arange(k), [str(i) for i in range(k)]
    else:
        ticks, names = np.arange(0, k, 10), [f"{i / 10:.0f}.0" for i in range(0, k, 10)]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("prediction")
    ax.set_ylabel("label")
    ax.set_title(f"{title}: confusion (row-normalised)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_mistakes(items: list[tuple[Path, int, int, float]], classes: int, title: str, path: Path) -> None:
    """Gallery of original crops: label -> prediction, confidence, file name below.

    Drawn with PIL on one canvas: 24 matplotlib axes cost ~1 s per model.
    """
    from PIL import Image, ImageDraw, ImageFont

    cw, ch, img_h, top = 104, 170, 120, 30  # cell, image box, caption band
    cols = min(8, len(items))
    rows = (len(items) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * cw, rows * ch + 22), "white")
    draw = ImageDraw.Draw(canvas)
    font, small = ImageFont.load_default(size=12), ImageFont.load_default(size=8)
    draw.text((4, 4), title + "  (label -> prediction, confidence)", fill="black", font=font)
    for k, (p, lab, pr, c) in enumerate(items):
        x0, y0 = (k % cols) * cw, 22 + (k // cols) * ch
        caption = f"{label_text(lab, classes)} -> {label_text(pr, classes)}  {c:.0%}"
        draw.text((x0 + cw // 2, y0 + 2), caption, fill="firebrick", font=font, anchor="ma")
        try:
            crop = Image.fromarray(preprocess.decode_rgb(p))
            scale = min((cw - 8) / crop.width, img_h / crop.height)
            crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))))
            canvas.paste(crop, (x0 + (cw - crop.width) // 2, y0 + top))
        except (OSError, ValueError):
            draw.text(
                (x0 + cw // 2, y0 + top + img_h // 2), "unreadable", fill="black", font=small, anchor="mm"
            )
        draw.text((x0 + cw // 2, y0 + top + img_h + 4), p.name[:22], fill="dimgray", font=small, anchor="ma")
    canvas.save(path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats (smaller or equal size and higher accuracy), by size."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -1.0
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _kb_ticks(ax: Any, sizes: list[float]) -> None:
    """Plain-number ticks (budgets and powers of two) on the log size axis."""
    from matplotlib.ticker import FixedLocator, NullFormatter, StrMethodFormatter

    lo, hi = min([s for s in sizes if s > 0] + [32.0]) / 1.3, max(sizes + [256.0]) * 1.3
    ax.set_xlim(lo, hi)
    ticks = [t for t in (2, 4, 8, 16, 32, 64, 100, 128, 256, 512, 1024, 2048) if lo <= t <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_accuracy_vs_size(rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels (10 and 100 classes): accuracy vs .tflite KB, GRAY o / RGB ^, Pareto step line."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), dpi=100)
    for ax, classes in zip(axes, (10, 100), strict=True):
        ok = [r for r in rows if r["classes"] == classes and r.get("accuracy") is not None]
        for color, marker, tint in (("GRAY", "o", "tab:gray"), ("RGB", "^", "tab:red")):
            sel = [r for r in ok if r["color"] == color]
            ax.scatter([r["size_bytes"] / 1024 for r in sel], [100 * r["accuracy"] for r in sel],
                       marker=marker, color=tint, label=f"{color} (exact)", zorder=3)  # fmt: skip
            if classes == 100:
                ax.scatter([r["size_bytes"] / 1024 for r in sel], [100 * r["accuracy_tol"] for r in sel],
                           marker=marker, facecolors="none", edgecolors=tint, label=f"{color} within 0.1")  # fmt: skip
            for r in sel:
                ax.annotate(r.get("name") or r["model"], (r["size_bytes"] / 1024, 100 * r["accuracy"]),
                            fontsize=6, xytext=(3, 3), textcoords="offset points")  # fmt: skip
        pts = [(r["size_bytes"] / 1024, 100 * r["accuracy"]) for r in ok]
        front = [pts[i] for i in pareto_front(pts)]
        if front:
            xs, ys = zip(*front, strict=True)
            ax.step(xs, ys, where="post", color="tab:blue", lw=1, label="Pareto front (exact)")
        for p in (p for p in PUBLISHED if p["classes"] == classes and p["size_kb"]):
            ax.scatter([p["size_kb"]], [100 * p["accuracy"]], marker="*", s=90, color="tab:orange", zorder=4)
            ax.annotate(f"{p['model']} published*", (p["size_kb"], 100 * p["accuracy"]), fontsize=6,
                        xytext=(3, -9), textcoords="offset points")  # fmt: skip
        for kb in BUDGETS_KB:
            ax.axvline(kb, color="0.85", lw=0.8, ls="--", zorder=0)
        ax.set_xscale("log")
        _kb_ticks(ax, [r["size_bytes"] / 1024 for r in ok] + [p["size_kb"] or 0 for p in PUBLISHED])
        ax.set_xlabel(".tflite size (KB, log scale; dashed: budgets)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"{classes} classes")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.text(0.01, 0.01, f"* {PUBLISHED_NOTE}", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- tables


def best_per_budget(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most accurate model (exact; ties: tolerance, then smaller) within each budget and class count."""
    out = []
    for classes in (10, 100):
        ok = [r for r in rows if r["classes"] == classes and r.get("accuracy") is not None]
        for kb in BUDGETS_KB:
            best = _best_within(ok, kb, lambda r: (r["accuracy"], r.get("accuracy_tol") or 0))
            out.append({"budget_kb": kb, "classes": classes, "row": best})
    return out


def _best_within(rows: list[dict[str, Any]], kb: int, key: Any) -> dict[str, Any] | None:
    """Highest ``key`` among rows whose .tflite fits ``kb``; ties go to the smaller file."""
    fit = [r for r in rows if r["size_bytes"] <= kb * 1024]
    return max(fit, key=lambda r: (*key(r), -r["size_bytes"]), default=None)


def best_digit_reader_per_budget(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Most accurate *digit* reader within each budget, of either class count.

    A 100-class model reads a digit too (its tenth rounded half up), and a model trained on
    tenths knows where the x.4/x.5 boundary lies, which digit labels only say as 0 or 1.
    """
    ok = [r for r in rows if r.get("accuracy_digit") is not None]
    return [{"budget_kb": kb, "row": _best_within(ok, kb, lambda r: (r["accuracy_digit"],))} for kb in BUDGETS_KB]


def fmt_pct(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def fmt_kb(v: Any) -> str:
    return "-" if v is None else f"{v / 1024:.1f}"


def fmt_num(v: Any, fmt: str = ",.0f") -> str:
    return "-" if v is None else format(v, fmt)


TABLE_HEAD = ["model", "classes", "color", "images", "accuracy", "within 0.1", "digit (not x.4/x.5)",
              "digit (x.4/x.5)", "params", "size KB", "arena KB", "MACs", "PC inf/s", "PC e2e/s"]  # fmt: skip


def table_cells(r: dict[str, Any]) -> list[str]:
    if r.get("error"):
        return [r["model"], fmt_num(r.get("classes"), "d"), r.get("color") or "-", "ERROR"] + [""] * 10
    return [
        r["model"], str(r["classes"]), r["color"], fmt_num(r["images"], "d"), fmt_pct(r["accuracy"]),
        fmt_pct(r["accuracy_tol"]), fmt_pct(r.get("accuracy_digit_clear")), fmt_pct(r.get("accuracy_digit_boundary")),
        fmt_num(r["params"]), fmt_kb(r["size_bytes"]), fmt_kb(r["arena_bytes"]),
        fmt_num(r["macs"]), fmt_num(r["pc_inf_per_s"]), fmt_num(r["pc_e2e_per_s"]),
    ]  # fmt: skip


def published_cells(p: dict[str, Any], short: bool = False) -> list[str]:
    size = "-" if p["size_kb"] is None else f"{p['size_kb']:.1f}"
    return [f"{p['model']} *" if short else f"{p['model']} *{PUBLISHED_NOTE}*", str(p["classes"]), p["color"], "-", fmt_pct(p["accuracy"]),
            "-", "-", "-", "-", size, "-", "-", "-", "-"]  # fmt: skip


def row_order(r: dict[str, Any]) -> tuple:
    """Class count, colour, size; rows with errors last."""
    return (r.get("classes") or 999, r.get("color") or "~", r.get("size_bytes") or 0, r["model"])


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def results_markdown(rows: list[dict[str, Any]], published: bool = True) -> str:
    """The main table: models sorted by classes, colour, size; published rows after each class group."""
    body: list[list[str]] = []
    for classes in (10, 100):
        group = sorted((r for r in rows if r.get("classes") == classes), key=row_order)
        body += [table_cells(r) for r in group]
        body += [published_cells(p) for p in PUBLISHED if published and p["classes"] == classes]
    body += [table_cells(r) for r in rows if r.get("classes") not in (10, 100)]
    return md_table(TABLE_HEAD, body)


def budget_markdown(rows: list[dict[str, Any]]) -> str:
    cells = []
    for b in best_per_budget(rows):
        r = b["row"]
        if r is None:
            cells.append([f"{b['budget_kb']} KB", str(b["classes"]), "(none fits)", "", "", "", ""])
        else:
            cells.append([f"{b['budget_kb']} KB", str(b["classes"]), r["model"], r["color"], fmt_pct(r["accuracy"]),
                          fmt_pct(r["accuracy_tol"]), fmt_kb(r["size_bytes"])])  # fmt: skip
    return md_table(["budget", "classes", "best model", "color", "accuracy", "within 0.1", "size KB"], cells)


CONFIDENCE_NOTE = (
    "A reader may answer only when the model's top probability reaches a threshold, and keep the previous "
    "reading otherwise. The threshold is the lowest that reaches the target accuracy on the validation split "
    "(digits 99.5 %, exact tenths 90 %); *answered* and *accuracy of answers* are measured on this split."
)
CONFIDENCE_HEAD = ["model", "size KB", "target (validation)", "threshold (int8 score)", "answered",
                   "accuracy of answers", "accuracy of all"]  # fmt: skip


def confidence_markdown(rows: list[dict[str, Any]]) -> str:
    """Per model: the top-probability threshold chosen on validation, and on this split the
    fraction answered and the accuracy of those answers (exact tenths for 100 classes)."""
    return md_table(CONFIDENCE_HEAD, confidence_cells(rows))


def confidence_cells(rows: list[dict[str, Any]]) -> list[list[str]]:
    cells = []
    for r in sorted((r for r in rows if r.get("confidence_target") is not None), key=row_order):
        found = r["confidence_threshold"] is not None
        cells.append([r["model"], fmt_kb(r["size_bytes"]), fmt_pct(r["confidence_target"]),
                      _threshold_text(r) if found else "not reached",
                      fmt_pct(r["answered"]) if found else "-", fmt_pct(r["accuracy_answered"]),
                      fmt_pct(r["accuracy"])])  # fmt: skip
    return cells


def _threshold_text(r: dict[str, Any]) -> str:
    cut = r.get("confidence_threshold_int8")
    return f"{r['confidence_threshold']:.3f}" + ("" if cut is None else f" ({cut})")


def plot_accuracy_vs_answered(rows: list[dict[str, Any]], path: Path) -> None:
    """Two panels (10 and 100 classes): accuracy of the most confident answers against the
    fraction answered, for the best model per size budget; the target as a dashed line."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=100)
    for ax, classes in zip(axes, (10, 100), strict=True):
        best = {b["row"]["model"]: b["row"] for b in best_per_budget(rows) if b["classes"] == classes and b["row"]}
        for r in sorted(best.values(), key=row_order):
            if r.get("_coverage_curve") is not None:
                cov, acc = r["_coverage_curve"]
                ax.plot(100 * cov, 100 * acc, lw=1.2, label=f"{r['model']} ({fmt_kb(r['size_bytes'])} KB)")
                # a threshold chosen on validation may answer nothing on this split: no dot then
                if r.get("accuracy_answered") is not None:
                    ax.plot(100 * r["answered"], 100 * r["accuracy_answered"], "o", ms=4, color=ax.lines[-1].get_color())
        ax.axhline(100 * confidence.TARGETS[classes], color="0.5", ls="--", lw=0.8, label="target")
        ax.set_xlabel("images answered, most confident first (%)")
        ax.set_ylabel("accuracy of the answers (%)" + (" (exact tenth)" if classes == 100 else ""))
        ax.set_title(f"{classes} classes (dots: threshold chosen on validation)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def digit_budget_markdown(rows: list[dict[str, Any]]) -> str:
    cells = []
    for b in best_digit_reader_per_budget(rows):
        r = b["row"]
        if r is None:
            cells.append([f"{b['budget_kb']} KB", "(none fits)", "", "", "", "", ""])
        else:
            cells.append([f"{b['budget_kb']} KB", r["model"], fmt_pct(r["accuracy_digit"]),
                          fmt_pct(r.get("accuracy_digit_clear")), fmt_pct(r.get("accuracy_digit_boundary")),
                          fmt_kb(r["size_bytes"]), r.get("color") or "-"])  # fmt: skip
    return md_table(["budget", "best digit reader", "digit", "digit (not x.4/x.5)", "digit (x.4/x.5)", "size KB",
                     "color"], cells)  # fmt: skip


# ----------------------------------------------------------------------------- outputs


def _rel(p: Path) -> str:
    try:
        return Path(p).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(p)


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


def write_json(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: _clean(r.get(k)) for k in ROW_KEYS} for r in rows]
    path.write_text(json.dumps(clean, indent=1) + "\n")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Same rows; lists joined with ';', dicts as JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(ROW_KEYS)
        for r in rows:
            w.writerow([_csv_cell(_clean(r.get(k))) for k in ROW_KEYS])


METER_KEYS = ["model", "classes", "meter", "images", "accuracy", "accuracy_tol", "accuracy_digit"]


def write_meters_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """One line per model and meter folder of the split (the folder is the meter)."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(METER_KEYS)
        for r in rows:
            for m in r.get("_meters") or []:
                w.writerow([_csv_cell(_clean({**m, "model": r["model"], "classes": r["classes"]}[k]))
                            for k in METER_KEYS])


def read_meters_csv(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``meters.csv`` back as each model's per-meter rows (what ``per_meter_accuracy`` returned)."""
    out: dict[str, list[dict[str, Any]]] = {}
    with path.open(newline="") as f:
        for line in csv.DictReader(f):
            num = {k: (float(line[k]) if line[k] else None) for k in ("accuracy", "accuracy_tol", "accuracy_digit")}
            out.setdefault(line["model"], []).append({"meter": line["meter"], "images": int(line["images"]), **num})
    return out


def hardest_meters(rows: list[dict[str, Any]], classes: int, n: int = 10, min_images: int = 20) -> list[dict[str, Any]]:
    """The ``n`` meter folders (with at least ``min_images``) where the median model of this
    class count is least accurate, with the best model on each."""
    by_meter: dict[str, list[tuple[float, str, int]]] = {}
    for r in rows:
        if r.get("classes") == classes and not r.get("error"):
            for m in r.get("_meters") or []:
                if m["images"] >= min_images and m["accuracy"] is not None:
                    by_meter.setdefault(m["meter"], []).append((m["accuracy"], r["model"], m["images"]))
    table = []
    for meter, accs in by_meter.items():
        best = max(accs)
        table.append({"meter": meter, "images": accs[0][2], "median": float(np.median([a for a, _, _ in accs])),
                      "best_model": best[1], "best": best[0], "models": len(accs)})
    return sorted(table, key=lambda t: (t["median"], t["meter"]))[:n]


def hardest_meters_markdown(rows: list[dict[str, Any]]) -> str:
    parts = []
    for classes in (10, 100):
        table = hardest_meters(rows, classes)
        if table:
            parts += [f"{classes} classes ({table[0]['models']} models):", "", md_table(
                ["meter folder", "images", "median model", "best model", "its accuracy"],
                [[f"`{t['meter']}`", str(t["images"]), fmt_pct(t["median"]), t["best_model"], fmt_pct(t["best"])]
                 for t in table]), ""]  # fmt: skip
    return "\n".join(parts) if parts else "(no meter folder with 20 or more images)"


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, list):
        return ";".join("" if e is None else (f"{e:.4f}" if isinstance(e, float) else str(e)) for e in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True)
    return v


def summarize(
    rows: list[dict[str, Any]], data: DataSource | None, opt: Options, wall_s: float, argv: list[str]
) -> dict[str, Any]:
    ok = [r for r in rows if not r.get("error") and r.get("eval_s")]
    batched_s = sum(r["eval_s"] for r in ok)
    loop_s = sum(r["loop_est_s"] for r in ok)
    batched_cpu = sum(r["eval_cpu_s"] for r in ok)
    loop_cpu = sum(r["loop_est_cpu_s"] for r in ok)
    decode_s = data.decode_s if data and data.decode_s else 0.0
    # The earlier script's way: decode + preprocess + invoke every file, per model, batch 1.
    file_loop_s = sum(r["images"] * (decode_s + r["_e2e_mean_s"]) for r in ok if r.get("_e2e_mean_s"))
    load_s = data.load_s if data else 0.0
    return {
        "command": "digitrec bench " + " ".join(shlex.quote(a) for a in argv),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "pc": pc_description(),
        "interpreter": interpreter_label(opt.xnnpack, opt.threads),
        "data_root": str(data.root) if data else None,
        "data_fingerprint": data.fingerprint if data else None,
        "split": data.split if data else None,
        "split_mode": data.split_mode if data else None,
        "images": len(data.indices) if data else 0,
        "models": len(rows),
        "errors": sum(1 for r in rows if r.get("error")),
        "wall_s": wall_s,
        "batched_eval_s": batched_s,
        "loop_est_s": loop_s,
        "batched_eval_cpu_s": batched_cpu,
        "loop_est_cpu_s": loop_cpu,
        # CPU time of this process: other users of the shared cores do not skew the ratio
        "speedup": loop_cpu / batched_cpu if batched_cpu > 0 else None,
        "speedup_wall": loop_s / batched_s if batched_s > 0 else None,
        "loop_images_per_model": opt.loop_sample,
        "data_load_s": load_s,
        "file_loop_est_s": file_loop_s,
        "speedup_vs_file_loop": file_loop_s / (load_s + batched_s) if batched_s > 0 else None,
        "decode_ms": None if data is None or data.decode_s is None else 1000 * data.decode_s,
        "batch": opt.batch,
    }


def pc_description() -> str:
    name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"{name}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def write_report(rows: list[dict[str, Any]], summary: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "report.md"
    parts = [report_header(summary), "## Results", results_markdown(rows), "",
             "Sizes in KB = 1024 bytes. PC speeds are this PC's, batch 1, never an ESP32 figure.",
             "## Accuracy vs size", "![accuracy vs size](accuracy_vs_size.png)",
             "## Best model per size budget", budget_markdown(rows),
             "## Best digit reader per size budget (either class count)", digit_budget_markdown(rows),
             "## Hardest meter folders",
             "Accuracy per meter folder of the split (all folders and models: `meters.csv`); the folders "
             "where the median model is least accurate, at least 20 images each.", hardest_meters_markdown(rows)]  # fmt: skip
    if any(r.get("confidence_target") is not None for r in rows):
        parts += ["## Reading with a confidence threshold", CONFIDENCE_NOTE, confidence_markdown(rows),
                  "![accuracy vs answered](accuracy_vs_answered.png)"]  # fmt: skip
    errors = [r for r in rows if r.get("error")]
    if errors:
        parts += ["## Errors"] + [f"- `{r['model']}`: {r['error']}" for r in errors]
    warned = [r for r in rows if r.get("warnings")]
    if warned:
        parts += ["## Warnings"] + [f"- `{r['model']}`: {w}" for r in warned for w in r["warnings"]]
    parts += ["## Per model"] + [model_section(r) for r in rows if not r.get("error")]
    path.write_text("\n\n".join(parts) + "\n")
    return path


def report_header(s: dict[str, Any]) -> str:
    speed = "-" if s["speedup"] is None else f"{s['speedup']:.2f}x"
    decode = "-" if s["decode_ms"] is None else f"{s['decode_ms']:.2f} ms"
    return "\n".join([
        "# PC benchmark",
        "",
        f"Generated by `{s['command']}` on {s['date']}.",
        "",
        f"- Data: `{s['data_root']}` (fingerprint `{str(s['data_fingerprint'])[:16]}`), "
        f"split `{s['split']}` ({s['split_mode']} mode), {s['images']} images.",
        f"- PC: {s['pc']}; interpreter {s['interpreter']}.",
        f"- {s['models']} models ({s['errors']} with errors) in {s['wall_s']:.1f} s wall time.",
        f"- Batched evaluation (batch {s['batch']}): {s['batched_eval_cpu_s']:.1f} s CPU "
        f"({s['batched_eval_s']:.1f} s wall); a batch-1 per-image loop, extrapolated from "
        f"{s['loop_images_per_model']} images per model: {s['loop_est_cpu_s']:.1f} s CPU "
        f"({s['loop_est_s']:.1f} s wall); speed-up **{speed}** in CPU time ({_ratio(s['speedup_wall'], 2)} wall).",
        f"- Decoding one image file (not in the e2e figure): {decode}. Decoding, preprocessing and running "
        f"every file per model in a batch-1 loop (the earlier script's way), extrapolated: "
        f"{s['file_loop_est_s']:.1f} s, vs {s['data_load_s']:.1f} s cached data load + batched evaluation: "
        f"{_ratio(s['speedup_vs_file_loop'])}.",
    ])  # fmt: skip


def _ratio(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}x"


def model_section(r: dict[str, Any]) -> str:
    lines = [f"### {r['model']}", "",
             f"`{r['path']}` sha256 `{(r['sha256'] or '')[:16]}`; ops: {', '.join(sorted(set(r['ops'] or [])))}.",
             f"Figures from: {', '.join(f'{k} {v}' for k, v in sorted(r['sources'].items()))}."]  # fmt: skip
    lines.append(
        f"Accuracy {fmt_pct(r['accuracy'])} (within 0.1: {fmt_pct(r['accuracy_tol'])}, digit: "
        f"{fmt_pct(r['accuracy_digit'])}) on {r['images']} images; {fmt_kb(r['size_bytes'])} KB, "
        f"arena {fmt_kb(r['arena_bytes'])} KB; PC {fmt_num(r['pc_inf_per_s'])} inf/s."
    )
    if r.get("card_accuracy") is not None:
        lines.append(
            f"Card int8 test accuracy: {fmt_pct(r['card_accuracy'])}; data match: {r.get('data_match')}."
        )
    lines += ["", per_class_markdown(r["per_class_accuracy"], r["classes"]), ""]
    lines += [f"![{alt}]({r[k]})" for k, alt in (("confusion_png", "confusion"), ("mistakes_png", "worst mistakes"))
              if r.get(k)]  # fmt: skip
    return "\n".join(lines)


def per_class_markdown(per_class: list[float | None], classes: int) -> str:
    if classes == 10:
        return md_table(
            ["class"] + [str(c) for c in range(10)], [["accuracy"] + [fmt_pct(v) for v in per_class]]
        )
    rows = [[f"{d}.x"] + [fmt_pct(per_class[10 * d + t]) for t in range(10)] for d in range(10)]
    return md_table(["label"] + [f".{t}" for t in range(10)], rows)


def print_table(rows: list[dict[str, Any]]) -> None:
    try:
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(table_cells(r)[i]) for r in rows)) for i, h in enumerate(TABLE_HEAD)]
        for cells in [TABLE_HEAD] + [table_cells(r) for r in rows]:
            print("  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
        return
    t = Table(title="PC benchmark (PC speeds: this PC, batch 1)", caption=f"*: {PUBLISHED_NOTE}")
    for i, h in enumerate(TABLE_HEAD):
        t.add_column(h, justify="left" if i in (0, 2) else "right", no_wrap=i == 0)
    for r in rows:
        t.add_row(*table_cells(r), style="red" if r.get("error") else None)
    for p in PUBLISHED:
        t.add_row(*published_cells(p, short=True), style="dim")
    _print_wide(t)
    conf = confidence_cells(rows)
    if conf:
        c = Table(title="Reading with a confidence threshold (chosen on validation, measured on this split)")
        for i, h in enumerate(CONFIDENCE_HEAD):
            c.add_column(h, justify="left" if i == 0 else "right", no_wrap=i == 0)
        for cells in conf:
            c.add_row(*cells)
        _print_wide(c)


def _print_wide(table: Any) -> None:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or logged: as wide as the table, not squeezed to 80 columns
        console = Console(width=max(console.width, Console(width=400).measure(table).maximum))
    console.print(table)


# ----------------------------------------------------------------------------- CLI


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="PC benchmark of exported models: accuracy, size, PC speed, reports",
        description="Benchmark every model in exported_models/ (or those picked with --models) on a "
        "split of the dataset with the LiteRT interpreter, and write a table, JSON, CSV and a Markdown "
        "report with plots. Speeds are this PC's (labelled PC), not the ESP32's.",
    )
    p.add_argument("--data", type=Path, default=os.environ.get("DIGITREC_DATA"),
                   help="dataset root (default: $DIGITREC_DATA)")  # fmt: skip
    p.add_argument(
        "--split", choices=SPLITS, default="test", help="images to evaluate (all: every usable image)"
    )
    p.add_argument("--split-mode", choices=SPLIT_MODES, default="cluster")
    p.add_argument("--models", nargs="+", action="extend", metavar="GLOB",
                   help="model ids (e.g. '10cls_GRAY/*', 'v4') or paths to model folders/.tflite")  # fmt: skip
    p.add_argument("--exclude", nargs="+", action="extend", metavar="GLOB", help="model ids to skip")
    p.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="where model folders live")
    p.add_argument("--json", type=Path, help="also write the rows here (always: REPORT/bench.json)")
    p.add_argument("--csv", type=Path, help="also write the rows here (always: REPORT/bench.csv)")
    p.add_argument("--report", type=Path, default=REPORT_DIR, help="report folder (default reports/bench)")
    p.add_argument("--xnnpack", action="store_true", help="use the XNNPACK delegate (not TFLM arithmetic)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    p.add_argument("--batch", type=int, default=BATCH, help="images per batched invoke")
    p.add_argument(
        "--loop-sample", type=int, default=LOOP_SAMPLE, help="images per model in the batch-1 loop"
    )
    p.add_argument("--no-plots", action="store_true", help="skip per-model PNGs (faster)")
    p.add_argument("--cache", type=Path, help="data cache folder (default: the data stage's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    if not args.data:
        print("digitrec bench: no dataset; pass --data DIR or set DIGITREC_DATA", file=sys.stderr)
        return 2
    models = discover(args.models_dir, args.models, args.exclude)
    if not models:
        print(
            f"digitrec bench: no models found in {args.models_dir} matching {args.models or '*'}",
            file=sys.stderr,
        )
        return 2
    opt = Options(xnnpack=args.xnnpack, threads=args.threads, batch=args.batch, loop_sample=args.loop_sample,
                  plots=not args.no_plots, report_dir=args.report)  # fmt: skip
    opt.report_dir.mkdir(parents=True, exist_ok=True)
    try:
        data = DataSource(args.data, args.split, args.split_mode, args.cache)
    except (OSError, ValueError) as exc:  # a missing or unreadable dataset: one clear line
        print(f"digitrec bench: cannot load the dataset {args.data}: {exc}", file=sys.stderr)
        return 2
    rows = sorted(bench_all(models, data, opt), key=row_order)
    argv = sys.argv[2:] if len(sys.argv) > 2 and sys.argv[1] == "bench" else []
    summary = summarize(rows, data, opt, time.perf_counter() - t0, argv)
    write_outputs(rows, summary, opt, args.json, args.csv)
    print_table(rows)
    for r in rows:
        if r.get("error"):
            print(f"error: {r['error']}", file=sys.stderr)
    sp = "-" if summary["speedup"] is None else f"{summary['speedup']:.2f}x"
    print(f"{len(rows)} models, {summary['images']} images, {summary['wall_s']:.1f} s; batched vs batch-1 loop: {sp}; "
          f"report: {_rel(opt.report_dir / 'report.md')}")  # fmt: skip
    return 1 if summary["errors"] else 0


def bench_all(models: list[tuple[str, Path]], data: DataSource, opt: Options) -> list[dict[str, Any]]:
    rows = []
    for i, (mid, path) in enumerate(models, 1):
        t = time.perf_counter()
        row = bench_model(mid, path, data, opt)
        state = row["error"] if row.get("error") else f"accuracy {fmt_pct(row['accuracy'])}"
        print(
            f"[{i}/{len(models)}] {mid}: {state} ({time.perf_counter() - t:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
        rows.append(row)
    return rows


def write_outputs(rows: list[dict[str, Any]], summary: dict[str, Any], opt: Options,
                  json_path: Path | None, csv_path: Path | None) -> None:  # fmt: skip
    out = opt.report_dir
    for p in {out / "bench.json", json_path} - {None}:
        write_json(rows, p)
    for p in {out / "bench.csv", csv_path} - {None}:
        write_csv(rows, p)
    (out / "summary.json").write_text(json.dumps({k: _clean(v) for k, v in summary.items()}, indent=1) + "\n")
    write_meters_csv(rows, out / "meters.csv")
    plot_accuracy_vs_size([r for r in rows if not r.get("error")], out / "accuracy_vs_size.png")
    if any(r.get("_coverage_curve") is not None for r in rows):
        plot_accuracy_vs_answered([r for r in rows if not r.get("error")], out / "accuracy_vs_answered.png")
    write_report(rows, summary, out)
