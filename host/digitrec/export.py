"""The export stage: QAT Keras model -> int8 .tflite + C array + model card.

* Full-integer conversion (int8 input and output, ``TFLITE_BUILTINS_INT8`` only, calibrated
  on training images): anything that cannot be quantized is an error, never a float or
  dynamic-range fallback.
* The op list is read back from the .tflite and checked against the firmware's single op
  list (``digitrec.ops.FIRMWARE_OPS``); an op outside it is refused, by name.
* ``arena_bytes`` is the smallest tensor arena with which the real TFLM interpreter (PyPI
  ``tflite-micro``, x86-64 host build) allocates and invokes, found by bisection in a child
  process (TFLM may crash, not raise, when the arena is absurdly small). A 32-bit ESP32 needs
  at most this much (host pointers are 8 bytes).
* Accuracy: float Keras model vs the int8 model under LiteRT's builtin kernels
  (``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; XNNPACK is not bit-exact with TFLM) on the test split.

``digitrec train`` calls :func:`export_model` as its last step (export is the conversion
half of training; this module never imports ``train``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from digitrec import labels, ops, preprocess

CARD_NAME = "card.json"
ARENA_GRANULARITY = 16


class ExportError(RuntimeError):
    """Conversion, quantization or op-check failure (never silently worked around)."""


# ----------------------------------------------------------------- conversion


def convert_int8(model, rep_images: np.ndarray) -> bytes:
    """Keras (QAT) model -> full-integer int8 .tflite bytes; ``rep_images`` uint8 NxHxWxC."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    rep = preprocess.to_float(rep_images)

    def representative():
        for i in range(len(rep)):
            yield [rep[i : i + 1]]

    try:
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        data = conv.convert()
    except Exception as exc:
        raise ExportError(f"int8 conversion of {model.name!r} failed: {exc}") from exc
    _require_full_int8(data)
    return strip_names(data)


BUFFER_ALIGNMENT = 16  # weight/bias buffers; the converter itself only guarantees 4


def strip_names(model_bytes: bytes) -> bytes:
    """Drop tensor/subgraph names and signatures (about 3.5 KB of strings no runtime here reads).

    Re-serializing with the schema's object API would align buffers to 1 byte; int32 biases
    read from unaligned flash addresses fault on Xtensa, so buffer vectors are re-packed at
    BUFFER_ALIGNMENT and checked afterwards.
    """
    from ai_edge_litert import schema_py_generated as fb
    from ai_edge_litert.tools import flatbuffer_utils as fu

    obj = fu.convert_bytearray_to_object(bytearray(model_bytes))
    fu.strip_strings(obj)
    for buf in obj.buffers:
        if buf.data is not None:
            buf.data = bytes(np.asarray(buf.data, np.uint8))  # the aligned (non-numpy) packing path
    plain = fb.BufferStartDataVector
    fb.BufferStartDataVector = lambda builder, n: builder.StartVector(1, n, BUFFER_ALIGNMENT)
    try:
        out = bytes(fu.convert_object_to_bytearray(obj))
    finally:
        fb.BufferStartDataVector = plain
    bad = [p for p, _ in buffer_spans(out) if p % BUFFER_ALIGNMENT]
    if bad:
        raise ExportError(f"{len(bad)} weight buffers misaligned after stripping names (first at byte {bad[0]})")
    return out


def buffer_spans(model_bytes: bytes) -> list[tuple[int, int]]:
    """(byte offset, length) of every non-empty constant buffer in a .tflite."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(bytearray(model_bytes), 0)
    spans = []
    for i in range(m.BuffersLength()):
        b = m.Buffers(i)
        if b.DataLength():
            spans.append((b._tab.Vector(b._tab.Offset(4)), b.DataLength()))
    return spans


def _litert(model_bytes: bytes, reference: bool = False):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kernels = OpResolverType.BUILTIN_REF if reference else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_content=model_bytes, experimental_op_resolver_type=kernels)
    interp.allocate_tensors()
    return interp


def _require_full_int8(model_bytes: bytes) -> None:
    interp = _litert(model_bytes)
    for d in (*interp.get_input_details(), *interp.get_output_details()):
        if d["dtype"] != np.int8:
            raise ExportError(f"tensor {d['name']} is {d['dtype'].__name__}, not int8")
    floats = [t["name"] for t in interp.get_tensor_details() if t["dtype"] == np.float32]
    if floats:
        raise ExportError(f"model is not fully int8 (float tensors: {', '.join(floats[:5])})")


def tflite_ops(model_bytes: bytes, interp=None) -> list[str]:
    """Sorted unique builtin op names used by a .tflite."""
    interp = interp or _litert(model_bytes)
    return sorted({op["op_name"] for op in interp._get_ops_details()})  # noqa: SLF001


def check_ops(op_list: list[str], what: str = "model") -> None:
    """Raise ExportError naming every op the firmware does not register (firmware/core/dr_ops.def)."""
    try:
        ops.check_ops(op_list, what)
    except ValueError as exc:
        raise ExportError(str(exc)) from exc


def count_macs(model_bytes: bytes) -> int:
    """Multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED per inference."""
    interp = _litert(model_bytes)
    shape = {t["index"]: tuple(int(s) for s in t["shape"]) for t in interp.get_tensor_details()}
    total = 0
    for op in interp._get_ops_details():  # noqa: SLF001
        name, w, out = op["op_name"], shape.get(op["inputs"][1]) if len(op["inputs"]) > 1 else None, shape[op["outputs"][0]]
        if name == "CONV_2D":
            total += int(np.prod(out[1:])) * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D":
            total += int(np.prod(out[1:])) * w[1] * w[2]
        elif name == "FULLY_CONNECTED":
            total += int(np.prod(out[:-1])) * w[0] * w[1]
    return int(total)


def io_quant(model_bytes: bytes) -> tuple[dict, dict]:
    interp = _litert(model_bytes)
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]

    def q(d: dict) -> dict:
        scale, zp = d["quantization"]
        return {"shape": [int(s) for s in d["shape"][1:]], "dtype": "int8", "scale": float(scale), "zero_point": int(zp)}

    return q(i), q(o)


# ----------------------------------------------------------------- inference


def litert_predict(model_bytes: bytes, x_int8: np.ndarray, batch: int = 256, reference: bool = False) -> np.ndarray:
    """int8 outputs of LiteRT's builtin kernels (no default delegates) for int8 inputs, or of its
    reference kernels. Neither is TFLM's arithmetic to the bit (docs/device.md, "Two PC answers")."""
    interp = _litert(model_bytes, reference)
    inp, out = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
    results = []
    for s in range(0, len(x_int8), batch):
        chunk = x_int8[s : s + batch]
        interp.resize_tensor_input(inp, chunk.shape)
        interp.allocate_tensors()
        interp.set_tensor(inp, chunk)
        interp.invoke()
        results.append(interp.get_tensor(out).copy())
    return np.concatenate(results) if results else np.zeros((0,), np.int8)


def tflm_predict(model_bytes: bytes, x_int8: np.ndarray, arena_bytes: int) -> np.ndarray:
    """int8 outputs of the real TFLM interpreter, one image at a time."""
    from tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(model_bytes, arena_size=int(arena_bytes))
    outs = []
    for img in x_int8:
        interp.set_input(img[None], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0)).reshape(-1).copy())
    return np.stack(outs)


_PROBE = r"""
import sys, numpy as np
from tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
shape = tuple(int(s) for s in sys.argv[2].split(","))
for line in sys.stdin:
    n = int(line)
    try:
        it = runtime.Interpreter.from_bytes(model, arena_size=n)
        it.set_input(np.zeros(shape, np.int8), 0)
        it.invoke()
        ok = "OK"
    except Exception:
        ok = "FAIL"
    print(ok, flush=True)
"""


class _Prober:
    """A child process answering 'does arena size n allocate and invoke?' (crash = no)."""

    def __init__(self, model_path: Path, shape: list[int]) -> None:
        self.args = [sys.executable, "-c", _PROBE, str(model_path), ",".join(str(s) for s in [1, *shape])]
        self.proc: subprocess.Popen | None = None

    def ok(self, n: int) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL, text=True)
        try:
            self.proc.stdin.write(f"{n}\n")
            self.proc.stdin.flush()
            answer = self.proc.stdout.readline().strip()
        except BrokenPipeError:
            answer = ""
        if not answer:  # the child crashed on this size
            self.proc.wait()
            self.proc = None
        return answer == "OK"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def arena_ok(model_bytes: bytes, arena_bytes: int) -> bool:
    """Whether TFLM allocates and invokes with ``arena_bytes`` (in a child process)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(model_bytes)
        prober = _Prober(path, io_quant(model_bytes)[0]["shape"])
        try:
            return prober.ok(arena_bytes)
        finally:
            prober.close()


def measure_arena(model_bytes: bytes) -> int:
    """Smallest arena (multiple of 16 bytes) with which TFLM allocates and invokes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(model_bytes)
        prober = _Prober(path, io_quant(model_bytes)[0]["shape"])
        try:
            hi = 16 * 1024
            while not prober.ok(hi):
                hi *= 2
                if hi > 64 * 1024 * 1024:
                    raise ExportError("TFLM cannot allocate this model even with a 64 MB arena")
            lo = 0  # known to fail (or trivially so)
            while hi - lo > ARENA_GRANULARITY:
                mid = (lo + hi) // 2 // ARENA_GRANULARITY * ARENA_GRANULARITY
                if mid <= lo:
                    break
                lo, hi = (lo, mid) if prober.ok(mid) else (mid, hi)
            return hi
        finally:
            prober.close()


# ----------------------------------------------------------------- C array and card


def c_array_files(model_bytes: bytes, card: dict) -> tuple[str, str]:
    """(model_data.h, model_data.cc) texts per docs/architecture.md."""
    iq, oq = card["input"], card["output"]
    h, w, c = iq["shape"]
    defines = [
        ("DR_MODEL_NAME", json.dumps(card["name"])),
        ("DR_MODEL_SHA256", json.dumps(card["sha256"])),
        ("DR_MODEL_CLASSES", str(card["classes"])),
        ("DR_MODEL_COLOR", json.dumps(card["color"])),
        ("DR_MODEL_INPUT_H", str(h)),
        ("DR_MODEL_INPUT_W", str(w)),
        ("DR_MODEL_INPUT_C", str(c)),
        ("DR_MODEL_IN_SCALE", f"{iq['scale']!r}f"),
        ("DR_MODEL_IN_ZP", str(iq["zero_point"])),
        ("DR_MODEL_OUT_SCALE", f"{oq['scale']!r}f"),
        ("DR_MODEL_OUT_ZP", str(oq["zero_point"])),
        ("DR_MODEL_ARENA_BYTES", str(card["arena_bytes"])),
    ]
    header = "\n".join(
        [
            f"// Generated by `digitrec export` from model.tflite ({card['name']}, {card['classes']} classes, "
            f"{card['color']}). Do not edit.",
            "#ifndef DR_MODEL_DATA_H_",
            "#define DR_MODEL_DATA_H_",
            "",
            *[f"#define {k} {v}" for k, v in defines],
            "",
            "extern const unsigned char dr_model_data[];",
            "extern const unsigned int dr_model_data_len;",
            "",
            "#endif  // DR_MODEL_DATA_H_",
            "",
        ]
    )
    rows = [", ".join(f"0x{b:02x}" for b in model_bytes[i : i + 12]) for i in range(0, len(model_bytes), 12)]
    body = "\n".join(
        [
            "// Generated by `digitrec export`. Do not edit.",
            '#include "model_data.h"',
            "",
            "alignas(16) const unsigned char dr_model_data[] = {",
            *[f"    {r}," for r in rows],
            "};",
            f"const unsigned int dr_model_data_len = {len(model_bytes)};",
            "",
        ]
    )
    return header, body


def accuracy(pred: np.ndarray, y: np.ndarray, classes: int) -> tuple[float | None, float | None]:
    """(exact, within-one-class circular for 100 classes else None)."""
    if len(y) == 0:
        return None, None
    exact = float(np.mean(pred == y))
    if classes != 100:
        return exact, None
    d = np.abs(pred.astype(np.int64) - y.astype(np.int64))
    return exact, float(np.mean(np.minimum(d, classes - d) <= 1))


def evaluate(model_bytes: bytes, float_model, x: np.ndarray, y: np.ndarray, classes: int) -> dict:
    """Float vs int8 accuracy on uint8 images ``x`` with labels ``y``."""
    iq, _ = io_quant(model_bytes)
    q = litert_predict(model_bytes, preprocess.to_int8(x, preprocess.Quant(iq["scale"], iq["zero_point"])))
    int8_pred = labels.read_class(q)
    out = {}
    if float_model is not None and len(x):
        fpred = float_model.predict(preprocess.to_float(x), batch_size=256, verbose=0).argmax(axis=-1)
        out["float_test"], out["float_test_tol"] = accuracy(fpred, y, classes)
        out["int8_float_agreement"] = float(np.mean(fpred == int8_pred))
    else:
        out["float_test"], out["float_test_tol"] = None, None
    out["int8_test"], out["int8_test_tol"] = accuracy(int8_pred, y, classes)
    out["test_images"] = int(len(y))
    return out


def build_card(model_bytes: bytes, meta: dict) -> dict:
    """Card fields measured from the .tflite, merged with ``meta`` (name, classes, data, ...)."""
    op_names = tflite_ops(model_bytes)
    check_ops(op_names, meta.get("name", "model"))
    iq, oq = io_quant(model_bytes)
    card = {
        "name": meta["name"],
        "family": meta.get("family", meta["name"]),
        "classes": int(meta["classes"]),
        "color": meta["color"].upper(),
        "input": iq,
        "output": oq,
        "params": meta.get("params"),
        "params_note": "weights only: all variables of the float Keras model, BatchNorm unfolded",
        "tflite_bytes": len(model_bytes),
        "sha256": hashlib.sha256(model_bytes).hexdigest(),
        "macs": count_macs(model_bytes),
        "arena_bytes": measure_arena(model_bytes),
        "arena_note": "smallest arena that allocates+invokes in PyPI tflite-micro (x86-64 host build)",
        "ops": op_names,
        "preprocess": {
            "gray_weights": list(preprocess.GRAY_WEIGHTS),
            "resize": preprocess.RESIZE_FILTER,
            "height": preprocess.HEIGHT,
            "width": preprocess.WIDTH,
        },
    }
    for key in ("data", "accuracy", "training", "config_hash"):
        if key in meta:
            card[key] = meta[key]
    return card


def write_model_dir(out_dir: Path, model_bytes: bytes, card: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(model_bytes)
    header, body = c_array_files(model_bytes, card)
    (out_dir / "model_data.h").write_text(header)
    (out_dir / "model_data.cc").write_text(body)
    (out_dir / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")


def model_dir(out_root: Path, classes: int, color: str, name: str) -> Path:
    return Path(out_root) / f"{classes}cls_{color.upper()}" / name


def export_model(
    qat_model,
    float_model,
    out_dir: Path,
    meta: dict,
    rep_images: np.ndarray,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict:
    """Convert, check, measure, evaluate and write ``out_dir``; return the card."""
    model_bytes = convert_int8(qat_model, rep_images)
    check_ops(tflite_ops(model_bytes), meta["name"])  # refuse before spending time measuring
    meta = dict(meta)
    if test is not None:
        meta["accuracy"] = evaluate(model_bytes, float_model, test[0], test[1], int(meta["classes"]))
    card = build_card(model_bytes, meta)
    write_model_dir(Path(out_dir), model_bytes, card)
    return card


# ----------------------------------------------------------------- CLI


def load_run(run: Path) -> tuple[object, object, dict]:
    """(QAT model, float model, record) rebuilt from a `digitrec train` run directory."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from digitrec.models import create_model, qat

    run = run.parent if run.is_file() else run  # --keras runs/.../qat.weights.h5 works too
    record_path = run / "record.json"
    if not record_path.exists():
        raise SystemExit(f"{record_path} not found: is {run} a finished `digitrec train` run?")
    meta = json.loads(record_path.read_text())
    float_model = create_model(meta["name"], int(meta["classes"]), meta["color"].lower())
    float_model.load_weights(str(run / "float.weights.h5"))
    # runs of training code version 1 (and --qat-dropout runs) fine-tuned their QAT model with Dropout
    training = meta.get("training", {})
    keep_dropout = training.get("code_version", 1) < 2 or bool(training.get("qat_dropout"))
    qat_model = qat.quantize(create_model(meta["name"], int(meta["classes"]), meta["color"].lower()),
                             keep_dropout=keep_dropout)
    qat_model.load_weights(str(run / "qat.weights.h5"))
    return qat_model, float_model, meta


def run(args: argparse.Namespace) -> int:
    from digitrec import data

    t0 = time.time()
    qat_model, float_model, meta = load_run(Path(args.run))
    root = args.data or os.environ.get("DIGITREC_DATA")
    if not root:
        raise SystemExit("--data (or $DIGITREC_DATA) is required for calibration and test accuracy")
    color, classes = meta["color"].lower(), int(meta["classes"])
    mode = meta.get("data", {}).get("split_mode", "cluster")
    x_train, _, _ = data.get_split_arrays(root, "train", color, classes, mode)
    x_test, y_test, _ = data.get_split_arrays(root, "test", color, classes, mode)
    rep = representative_subset(x_train, args.calibration, meta.get("training", {}).get("seed", 0))
    out_dir = model_dir(Path(args.out), classes, color, meta["name"])
    card = export_model(qat_model, float_model, out_dir, meta, rep, (x_test, y_test))
    print(json.dumps(card, indent=2) if args.json else summary_line(card))
    print(f"wrote {out_dir} in {time.time() - t0:.1f}s")
    return 0


def representative_subset(x: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    idx = np.random.default_rng(seed).permutation(len(x))[:n]
    return x[np.sort(idx)]


def summary_line(card: dict) -> str:
    acc = card.get("accuracy", {})
    return (
        f"{card['name']} {card['classes']}cls {card['color']}: {card['tflite_bytes'] / 1024:.1f} KB, "
        f"arena {card['arena_bytes']} B, {card['macs'] / 1e6:.2f} M MACs, params {card['params']}, "
        f"float {acc.get('float_test')}, int8 {acc.get('int8_test')} (tol {acc.get('int8_test_tol')})"
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="int8 .tflite + C array + model card from a trained QAT model",
        description="Re-export a trained QAT model (a `digitrec train` run directory) as a full-int8 "
        "TFLite model, C array and model card in exported_models/<N>cls_<COLOR>/<name>/.",
    )
    p.add_argument("--run", "--keras", dest="run", required=True, help="a `digitrec train` run dir, e.g. runs/10cls_GRAY/v4 "
                   "(record.json + float/qat weights)")
    p.add_argument("--data", help="dataset root (default $DIGITREC_DATA)")
    p.add_argument("--out", default="exported_models", help="output root (default exported_models)")
    p.add_argument("--calibration", type=int, default=500, help="training images used for calibration")
    p.add_argument("--json", action="store_true", help="print the card as JSON")
    p.set_defaults(func=run)
