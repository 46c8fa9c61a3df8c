"""`digitrec device list|flash|bench|virtual`: a board (or the virtual device) over serial.

The benchmark checks which model the board runs (SHA-256 of the model bytes in INFO),
streams the images pipelined (``--window`` requests in flight), writes each answer to a
JSONL file the moment it arrives, and survives a lossy link: a reply that is lost or
corrupt is re-sent with a new ``seq``, a board reset (BOOT frame or a changed
``boot_id``) re-sends what was in flight, and Ctrl-C or a dead port stops with every
answer kept, so ``--resume`` carries on without repeating work. Each image is written
exactly once. Then TIMED_RUN gives the chip's own latency.

JSONL lines carry a ``kind``: ``meta`` (one per session: device INFO, model, mode),
``result`` (one per image) and ``summary`` (end of a finished session).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import protocol as P
from digitrec.labels import read_class

REPO_ROOT = Path(__file__).resolve().parents[2]
KNOWN_BRIDGES = {
    (0x10C4, None): "CP210x (ESP32-CAM-MB, DevKitC)",
    (0x1A86, None): "CH34x (ESP32-CAM-MB: CH340)",
    (0x0403, None): "FTDI",
    (0x303A, 0x1001): "ESP32-S3 USB-Serial-JTAG",
}
DEFAULT_WINDOW = 4
# Requests in flight must fit the device's receive buffer while it computes; 16 KB is a
# conservative default for an ESP-IDF UART driver buffer (INFO rx_buffer overrides).
MAX_INFLIGHT_BYTES = 16384
TIMED_WARMUP, TIMED_RUNS = 10, 100
HELLO_TRIES, HELLO_WAIT_S = 8, 1.0
POLL_S = 0.02


class DeviceError(RuntimeError):
    """A problem the user can fix (wrong port, wrong model, old firmware): printed, no traceback."""


# ================================================================ device list

def bridge_name(vid: int | None, pid: int | None) -> str:
    """The known ESP32 USB bridge behind a VID:PID, or ''."""
    if vid is None:
        return ""
    return KNOWN_BRIDGES.get((vid, pid)) or KNOWN_BRIDGES.get((vid, None)) or ""


def list_ports() -> list[dict[str, Any]]:
    from serial.tools import list_ports as lp

    rows = []
    for p in sorted(lp.comports(), key=lambda p: p.device):
        vidpid = f"{p.vid:04X}:{p.pid:04X}" if p.vid is not None else ""
        rows.append({"port": p.device, "vid_pid": vidpid, "bridge": bridge_name(p.vid, p.pid),
                     "description": p.description or ""})
    return rows


def run_list(args: argparse.Namespace) -> int:
    rows = list_ports()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no serial ports found (is the board plugged in? on Linux, are you in the 'dialout' group?)")
        return 0
    print(f"{'port':<22} {'VID:PID':<10} {'ESP32 bridge':<34} description")
    for r in rows:
        mark = r["bridge"] or "-"
        print(f"{r['port']:<22} {r['vid_pid'] or '-':<10} {mark:<34} {r['description']}")
    return 0


# ================================================================ models

def resolve_model(arg: str, models_root: Path | None = None) -> Path:
    """A model dir from a path, `10cls_GRAY/v4`, or a unique name like `v4`, under exported_models/."""
    p = Path(arg)
    if p.exists():
        return p
    root = models_root or Path(os.environ.get("DIGITREC_MODELS", REPO_ROOT / "exported_models"))
    if (root / arg / "card.json").exists():
        return root / arg
    hits = sorted(d for d in root.glob(f"*/{arg}") if (d / "card.json").exists())
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise DeviceError(f"model {arg!r} not found (neither a path nor a model under {root}/)")
    names = ", ".join(h.relative_to(root).as_posix() for h in hits)
    raise DeviceError(f"model name {arg!r} is ambiguous: {names}; pass one of these")


@dataclass
class Model:
    path: Path
    tflite: bytes
    card: dict[str, Any]
    sha256: str

    @property
    def color(self) -> str:
        return str(self.card["color"]).lower()

    @property
    def classes(self) -> int:
        return int(self.card["classes"])

    @property
    def quant(self) -> Any:
        from digitrec.preprocess import Quant

        return Quant(float(self.card["input"]["scale"]), int(self.card["input"]["zero_point"]))


def load_model(arg: str) -> Model:
    from digitrec.virtual import ModelError, load_model_dir

    try:
        tflite, card, d = load_model_dir(resolve_model(arg))
    except ModelError as exc:
        raise DeviceError(str(exc)) from exc
    sha = hashlib.sha256(tflite).hexdigest()
    if card.get("sha256") and card["sha256"] != sha:
        print(f"warning: {d}/card.json sha256 differs from model.tflite; using the file's", file=sys.stderr)
    return Model(d, tflite, card, sha)


# ================================================================ the link

class Link:
    """A serial port speaking frames: send with fresh seqs, poll decoded events."""

    def __init__(self, ser: Any) -> None:
        self.ser = ser
        self.dec = P.Decoder()
        # random start: a reply still on its way to a killed earlier session cannot match
        # one of our first requests by chance (HELLO, answered in order, flushes the rest)
        self.seq = random.randrange(1, 0xFFFF)
        self.tx_bytes = self.rx_bytes = 0
        self.tx_payload = self.rx_payload = 0
        self.last_rx = time.monotonic()

    def next_seq(self) -> int:
        self.seq = self.seq % 0xFFFF + 1  # 1..65535: seq 0 is the unsolicited BOOT's
        return self.seq

    def send(self, msg_type: int, payload: bytes = b"") -> int:
        import serial

        seq = self.next_seq()
        frame = P.encode_frame(msg_type, seq, payload)
        try:
            self.ser.write(frame)
        except (serial.SerialException, OSError) as exc:  # e.g. a USB board unplugged
            raise PortClosed(f"serial port closed: {exc}") from exc
        self.tx_bytes += len(frame)
        self.tx_payload += len(payload)
        return seq

    def poll(self) -> list[P.Frame | P.CrcMismatch]:
        import serial

        try:
            data = self.ser.read(max(1, self.ser.in_waiting))
        except (serial.SerialException, OSError) as exc:
            raise PortClosed(f"serial port closed: {exc}") from exc
        if not data:
            return []
        self.last_rx = time.monotonic()
        self.rx_bytes += len(data)
        events = self.dec.feed(data)
        self.rx_payload += sum(len(e.payload) for e in events if isinstance(e, P.Frame))
        return events

    def close(self) -> None:
        try:
            self.ser.close()
        except Exception:
            pass


class PortClosed(DeviceError):
    pass


def open_port(port: str, baud: int) -> Link:
    import serial

    ser = serial.Serial()
    ser.port, ser.baudrate, ser.timeout = port, baud, POLL_S
    # ESP32 auto-reset circuits: DTR/RTS asserted on open can hold EN low or select the
    # ROM bootloader; deasserting both lets the firmware run.
    ser.dtr = ser.rts = False
    try:
        ser.open()
    except (serial.SerialException, OSError) as exc:
        known = ", ".join(r["port"] for r in list_ports()) or "none"
        reason = "no such port" if not Path(port).exists() else str(exc)
        raise DeviceError(f"cannot open serial port {port}: {reason} (ports found: {known}; "
                          f"see `digitrec device list`)") from exc
    return Link(ser)


def hello(link: Link, tries: int = HELLO_TRIES, wait_s: float = HELLO_WAIT_S) -> dict[str, Any]:
    """HELLO until INFO answers. Anything before our INFO (a BOOT frame, replies to an earlier
    session's requests) is skipped: the device answers in order, so INFO comes after them."""
    for _ in range(tries):
        seq = link.send(P.MsgType.HELLO)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            events = [e for e in link.poll() if e.seq == seq]
            if any(isinstance(e, P.CrcMismatch) for e in events):
                break  # INFO damaged on the way: ask again at once
            for ev in events:
                if ev.type == P.MsgType.INFO:
                    return P.unpack_info(ev.payload)
    garbage = link.dec.garbage
    hint = f" ({garbage} bytes of non-frame data seen: wrong baud rate or no digitrec firmware?)" if garbage else ""
    raise DeviceError(f"no answer to HELLO on {link.ser.port} after {tries} tries{hint}; is the digitrec "
                      f"firmware flashed and running at {link.ser.baudrate} baud?")


def check_device(info: dict[str, Any], model: Model | None) -> None:
    """Refuse a device with another protocol version, another model, or no usable model."""
    proto = info.get("proto")
    if proto != P.PROTO_VERSION:
        raise DeviceError(
            f"protocol version mismatch: the device speaks protocol {proto}, this digitrec speaks "
            f"{P.PROTO_VERSION}; flash firmware built from this checkout (digitrec device flash)")
    if model is not None and info.get("model_sha256") != model.sha256:
        raise DeviceError(
            f"wrong model on the board: it runs {info.get('model')!r} (sha256 "
            f"{str(info.get('model_sha256'))[:12]}...), but --model is {model.card['name']!r} (sha256 "
            f"{model.sha256[:12]}...) from {model.path}; flash it with: digitrec device flash --env ENV "
            f"--model {model.card['name']} --port PORT")
    if not info.get("ready", True):
        raise DeviceError(f"the device cannot run its model: {info.get('error') or 'not ready'}")


# ================================================================ work items

@dataclass
class Work:
    path: str
    label: int
    pc_class: int
    pc_scores: list[int]
    tensor: np.ndarray  # the int8 input (tensor mode, and raw-mode fallback)
    tflm_scores: list[int] | None = None  # the host's TFLite Micro (the firmware's arithmetic)
    sent: str = "tensor"  # "tensor" or "raw:<FORMAT>"
    attempts: int = 0
    payload: bytes | None = None

    @property
    def msg_type(self) -> int:
        return P.MsgType.INFER_TENSOR if self.sent == "tensor" else P.MsgType.INFER_RAW


def pc_reference(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """int8 scores of the PC: the PC benchmark's batched LiteRT run without default delegates
    (builtin kernels; batch 1 for fixed-batch models)."""
    from digitrec import bench

    try:
        return bench.predict_batched(model_bytes, x)
    except (RuntimeError, ValueError, bench.BenchError):
        return bench.predict_batched(model_bytes, x, batch=1)


def tflm_reference(model: Model, x: np.ndarray) -> np.ndarray:
    """int8 scores of the host's TFLite Micro (PyPI ``tflite-micro``): the kernels and the
    requantization rounding the firmware compiles, so a correct device matches it score for
    score. LiteRT is not this arithmetic: its optimized DEPTHWISE_CONV_2D and its reference
    FULLY_CONNECTED (which rounds once where TFLM rounds twice) move a score by an LSB or more."""
    from digitrec.export import tflm_predict
    from digitrec.virtual import ARENA_MARGIN

    return tflm_predict(model.tflite, x, int(model.card["arena_bytes"]) + ARENA_MARGIN)


def select_images(data: str | Path, split: str, limit: int | None) -> tuple[Any, list[int]]:
    from digitrec.data import load_dataset

    ds = load_dataset(data, progress=sys.stderr.isatty())
    idx = ds.usable if split == "all" else ds.split("cluster")[split]
    return ds, spread(idx, limit)


def spread(indices: list[int], limit: int | None) -> list[int]:
    """At most ``limit`` of ``indices``, evenly spaced: the split is ordered by meter folder,
    so its first N images would come from a few meters and give a biased accuracy."""
    from digitrec.bench import sample_positions

    return [indices[p] for p in sample_positions(len(indices), limit or len(indices))]


def build_work(ds: Any, indices: list[int], model: Model, mode: str, raw_format: str,
               with_tflm: bool = True) -> list[Work]:
    from digitrec.preprocess import to_int8

    x, y, paths = ds.arrays(indices, model.color, model.classes)
    xq = to_int8(x, model.quant)
    scores = pc_reference(model.tflite, xq)
    work = [Work(p, int(lbl), int(c), [int(v) for v in s], t)
            for p, lbl, c, s, t in zip(paths, y, read_class(scores), scores, xq, strict=True)]
    if with_tflm:
        for w, r in zip(work, tflm_reference(model, xq), strict=True):
            w.tflm_scores = [int(v) for v in r]
    if mode == "raw":
        for w in work:
            w.sent = raw_plan(ds.root, w.path, model.color, raw_format)
    return work


def raw_plan(root: Path, path: str, color: str, raw_format: str) -> str:
    """How to send one image raw: RGB888 when it fits, GRAY8 for GRAY models (same result:
    the device converts to gray before resizing), else the tensor (crop above the device's
    MAX_RAW_SIDE / MAX_PAYLOAD limits)."""
    from PIL import Image

    with Image.open(Path(root) / path) as im:
        w, h = im.size
    fits = w <= P.MAX_RAW_SIDE and h <= P.MAX_RAW_SIDE
    room = P.MAX_PAYLOAD - P.RAW_HEADER_LEN
    options = ["RGB888", "GRAY8"] if raw_format == "auto" else [raw_format]
    for fmt in options:
        if fmt == "GRAY8" and color != "gray":
            continue
        if fits and w * h * P.BYTES_PER_PIXEL[P.RawFormat[fmt]] <= room:
            return f"raw:{fmt}"
    return "tensor"


def make_payload(w: Work, root: Path) -> bytes:
    if w.sent == "tensor":
        return w.tensor.astype(np.int8).tobytes()
    from digitrec.preprocess import decode_rgb, to_gray

    rgb = decode_rgb(Path(root) / w.path)
    fmt = P.RawFormat[w.sent.split(":", 1)[1]]
    pixels = to_gray(rgb) if fmt == P.RawFormat.GRAY8 else rgb
    return P.pack_raw(fmt, rgb.shape[1], rgb.shape[0], np.ascontiguousarray(pixels).tobytes())


# ================================================================ results file

def read_results(path: str | Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(meta lines, result lines, summary lines) of a results JSONL; a torn last line is skipped."""
    metas, rows, sums = [], [], []
    p = Path(path)
    if not p.exists():
        return metas, rows, sums
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a killed process
        {"meta": metas, "result": rows, "summary": sums}.get(rec.get("kind"), []).append(rec)
    return metas, rows, sums


class ResultsFile:
    """Append-only JSONL, flushed per line so a killed process loses nothing answered."""

    def __init__(self, path: Path, resume: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if resume and path.exists():
            _cut_torn_tail(path)
        self.f = open(path, "a" if resume else "w", encoding="utf-8")  # noqa: SIM115

    def write(self, rec: dict[str, Any]) -> None:
        self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def _cut_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


# ================================================================ streaming

@dataclass
class Counters:
    retries: int = 0
    resets: int = 0
    resent_after_reset: int = 0
    late_replies: int = 0
    crc_errors_host: int = 0
    crc_errors_device: int = 0
    errors: int = 0


@dataclass
class Pending:
    work: Work
    sent_at: float


@dataclass
class Streamer:
    """Keeps ``window`` requests in flight and turns replies into result rows."""

    link: Link
    root: Path
    window: int
    timeout: float
    boot_id: Any
    on_row: Any  # callable(work, Result | ErrorReply)
    on_info: Any  # callable(info) -> None: checks a rebooted device
    max_bytes: int = 1 << 30  # request bytes in flight: what the device's receive buffer holds
    c: Counters = field(default_factory=Counters)
    inflight: dict[int, Pending] = field(default_factory=dict)
    queue: deque = field(default_factory=deque)
    probe: tuple[int, float] | None = None
    latencies: deque = field(default_factory=lambda: deque(maxlen=64))

    def run(self, work: list[Work], dead_after: float) -> None:
        # silence counts from the first request: preparing a whole split after HELLO can take
        # the host longer than dead_after
        self.link.last_rx = time.monotonic()
        self.queue.extend(work)
        while self.queue or self.inflight:
            self._fill()
            for ev in self.link.poll():
                self._handle(ev)
            self._check_timeouts()
            if self.inflight and time.monotonic() - self.link.last_rx > dead_after:
                raise DeviceError(f"no byte from the device for {dead_after:.0f} s: board gone or hung")

    def _fill(self) -> None:
        while self.queue and len(self.inflight) < self.window:
            w = self.queue[0]
            if w.payload is None:
                w.payload = make_payload(w, self.root)
            held = sum(len(p.work.payload or b"") + P.OVERHEAD for p in self.inflight.values())
            if self.inflight and held + len(w.payload) + P.OVERHEAD > self.max_bytes:
                return
            self._send(self.queue.popleft())

    def _send(self, w: Work) -> None:
        if w.payload is None:
            w.payload = make_payload(w, self.root)
        w.attempts += 1
        seq = self.link.send(w.msg_type, w.payload)
        self.inflight[seq] = Pending(w, time.monotonic())

    def _resend(self, seq: int) -> None:
        self.c.retries += 1
        self._send(self.inflight.pop(seq).work)

    def _handle(self, ev: P.Frame | P.CrcMismatch) -> None:
        if isinstance(ev, P.CrcMismatch):  # reply damaged on the way: header seq is trustworthy
            self.c.crc_errors_host += 1
            if ev.seq in self.inflight:
                self._resend(ev.seq)
            return
        if ev.type in (P.MsgType.BOOT, P.MsgType.INFO):
            self._on_boot_or_info(ev)
        elif ev.type == P.MsgType.RESULT:
            self._on_reply(ev.seq, P.unpack_result(ev.payload))
        elif ev.type == P.MsgType.ERROR:
            self._on_error(ev.seq, P.unpack_error(ev.payload))

    def _on_reply(self, seq: int, reply: Any) -> None:
        pending = self.inflight.pop(seq, None)
        if pending is None:
            self.c.late_replies += 1  # answer to a request already re-sent: ignored
            return
        self.latencies.append(time.monotonic() - pending.sent_at)
        pending.work.payload = None
        self.on_row(pending.work, reply)

    def _on_error(self, seq: int, err: P.ErrorReply) -> None:
        if err.code == P.ErrorCode.CRC:
            self.c.crc_errors_device += 1
            if seq in self.inflight:
                self._resend(seq)
            return
        if err.code in (P.ErrorCode.NOT_READY, P.ErrorCode.UNKNOWN_TYPE):
            raise DeviceError(f"device refused the request: {err.name}: {err.message}")
        if seq in self.inflight:
            self.c.errors += 1
            self._on_reply(seq, err)

    def _on_boot_or_info(self, ev: P.Frame) -> None:
        info = P.unpack_info(ev.payload)
        if self.probe and ev.seq == self.probe[0]:
            self.probe = None
        if info.get("boot_id") == self.boot_id:
            return
        self.c.resets += 1
        self.boot_id = info.get("boot_id")
        self.on_info(info)
        stale = sorted(self.inflight.items(), key=lambda kv: kv[1].sent_at)
        self.inflight.clear()
        self.c.resent_after_reset += len(stale)
        self.queue.extendleft(reversed([p.work for _, p in stale]))

    def _timeout_now(self) -> float:
        if not self.latencies:
            return self.timeout
        return max(self.timeout, 4 * max(self.latencies))

    def _check_timeouts(self) -> None:
        now = time.monotonic()
        limit = self._timeout_now()
        late = [s for s, p in self.inflight.items() if now - p.sent_at > limit]
        for seq in sorted(late, key=lambda s: self.inflight[s].sent_at):
            self._resend(seq)
        if late and (self.probe is None or now - self.probe[1] > limit):
            # a lost BOOT frame would hide a reset: ask for boot_id
            self.probe = (self.link.send(P.MsgType.HELLO), now)


def timed_run(link: Link, timeout: float, warmup: int = TIMED_WARMUP, runs: int = TIMED_RUNS) -> P.Timing | None:
    """TIMED_RUN on the last input; None when the device does not answer (reported, not fatal)."""
    for _ in range(2):
        seq = link.send(P.MsgType.TIMED_RUN, P.pack_timed_run(warmup, runs))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in link.poll():
                if isinstance(ev, P.Frame) and ev.seq == seq:
                    if ev.type == P.MsgType.TIMING:
                        return P.unpack_timing(ev.payload)
                    if ev.type == P.MsgType.ERROR:
                        print(f"warning: TIMED_RUN refused: {P.unpack_error(ev.payload)}", file=sys.stderr)
                        return None
    print("warning: no TIMING reply to TIMED_RUN", file=sys.stderr)
    return None


# ================================================================ summary

def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarize(rows: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """The bench JSON from result rows (every session of a resumed file) and this session."""
    ok = [r for r in rows if r.get("device_class") is not None]
    n = len(ok)

    def frac(pred: Any) -> float | None:
        return round(sum(1 for r in ok if pred(r)) / n, 6) if n else None

    raw_rows = [r for r in ok if str(r.get("sent", "")).startswith("raw")]
    with_tflm = bool(ok) and all("tflm_class" in r for r in ok)
    info = meta.get("info", {})
    virtual = info.get("chip") == "virtual"
    return {
        "images": len(rows),
        "answered": n,
        "errors": len(rows) - n,
        "mode": meta.get("mode"),
        "board": info.get("board"),
        "chip": info.get("chip"),
        "fw": info.get("fw"),
        "proto": info.get("proto"),
        "model": meta.get("model"),
        "model_sha256": info.get("model_sha256"),
        "classes": meta.get("classes"),
        "color": meta.get("color"),
        "device_accuracy": frac(lambda r: r["device_class"] == r["label"]),
        "host_accuracy": frac(lambda r: r["pc_class"] == r["label"]),
        "agreement": frac(lambda r: r["device_class"] == r["pc_class"]),
        "scores_identical": frac(lambda r: r["scores"] == r["pc_scores"]),
        "agreement_tflm": frac(lambda r: r["device_class"] == r["tflm_class"]) if with_tflm else None,
        "scores_identical_tflm": frac(lambda r: r["scores"] == r["tflm_scores"]) if with_tflm else None,
        "device_infer_us_median": _median([r["infer_us"] for r in ok]),
        "device_preprocess_us_median": _median([r["preprocess_us"] for r in raw_rows]) if raw_rows else 0.0,
        "raw_sent": len(raw_rows),
        "raw_fallback_tensor": sum(1 for r in ok if meta.get("mode") == "raw" and r.get("sent") == "tensor"),
        "timings_source": "host (virtual device)" if virtual else "device",
    }


def link_stats(link: Link, elapsed: float, baud: int) -> dict[str, Any]:
    """Throughput of the busier direction, as wire bytes and payload bytes per second, and
    as a fraction of the 8N1 line rate (None on an unpaced virtual link: baud 0)."""
    wire = max(link.tx_bytes, link.rx_bytes)
    payload = max(link.tx_payload, link.rx_payload)
    bps = wire / elapsed if elapsed > 0 else 0.0
    pps = payload / elapsed if elapsed > 0 else 0.0
    rate = P.line_rate_bytes_per_s(baud) if baud else None
    return {
        "baud": baud,
        "link_elapsed_s": round(elapsed, 3),
        "link_tx_bytes": link.tx_bytes,
        "link_rx_bytes": link.rx_bytes,
        "link_bytes_per_s": round(bps, 1),
        "link_payload_bytes_per_s": round(pps, 1),
        "link_utilization": round(bps / rate, 4) if rate else None,
        "link_payload_utilization": round(pps / rate, 4) if rate else None,
    }


# ================================================================ bench command

class VirtualProcess:
    """`digitrec device virtual` as a child process; its first stdout line is the pty path."""

    def __init__(self, model: Path, baud: int, extra: list[str] | None = None) -> None:
        cmd = [sys.executable, "-m", "digitrec.virtual", "--model", str(model), "--baud", str(baud), *(extra or [])]
        # own session: Ctrl-C reaches only the bench, which then stops the device in order
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        line = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not line.startswith("/"):
            self.stop()
            raise DeviceError(f"the virtual device did not start (exit code {self.proc.returncode})")
        self.port = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _raise_interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within it, `kill` (SIGTERM) stops like Ctrl-C, so what was answered is kept."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def positive_int(text: str) -> int:
    """argparse type: an int of at least 1 (a window of 0 would never send)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def default_timeout(window: int, baud: int, max_frame: int) -> float:
    # a request may queue behind `window` others on the wire, plus compute time on the chip
    return 1.0 + 2 * window * max_frame * P.BITS_PER_BYTE / max(baud, 1)


def run_bench(args: argparse.Namespace) -> int:
    if not args.data:
        raise DeviceError("no dataset: pass --data DIR or set DIGITREC_DATA")
    model = load_model(args.model)
    out = Path(args.out)
    done = _resume_state(out, model, args.mode) if args.resume else set()
    ds, indices = select_images(args.data, args.split, args.limit)
    with sigterm_as_ctrl_c(), session(args.port, model, args.baud) as (link, info):
        meta = {"kind": "meta", "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "port": args.port,
                "mode": args.mode, "model": model.card["name"], "model_path": str(model.path),
                "classes": model.classes, "color": model.card["color"], "baud": args.baud,
                "split": args.split, "data": str(ds.root), "info": info}
        indices = [i for i in indices if ds.items[i].path not in done]
        work = build_work(ds, indices, model, args.mode, args.raw_format, not args.no_tflm) if indices else []
        results = ResultsFile(out, args.resume)
        results.write(meta)
        try:
            stream = _stream(args, link, ds.root, work, info, model, results)
        finally:
            results.close()
        timing = None if stream["stopped"] else timed_run(link, _timed_run_timeout(out))
    return _finish(args, out, meta, stream, timing)


@contextlib.contextmanager
def session(port: str, model: Model, baud: int) -> Iterator[tuple[Link, dict[str, Any]]]:
    """A link to the board on ``port`` (``virtual``: a virtual device started for ``model``,
    its UART paced at ``baud``, 0 unpaced), HELLO answered and the board's model checked."""
    virtual = VirtualProcess(model.path, baud) if port == "virtual" else None
    try:
        link = open_port(virtual.port if virtual else port, baud or P.DEFAULT_BAUD)
        try:
            info = hello(link)
            check_device(info, model)
            yield link, info
        finally:
            link.close()
    finally:
        if virtual:
            virtual.stop()


def _timed_run_timeout(out: Path) -> float:
    """Warm-ups and runs at 3x the median per-image invoke time, plus slack."""
    infer = [r["infer_us"] for r in read_results(out)[1] if r.get("infer_us") is not None]
    per = statistics.median(infer) / 1e6 if infer else 0.5
    return 3.0 + 3 * (TIMED_WARMUP + TIMED_RUNS) * per


def _resume_state(out: Path, model: Model, mode: str) -> set[str]:
    metas, rows, _ = read_results(out)
    for m in metas:
        if m.get("info", {}).get("model_sha256") != model.sha256 or m.get("mode") != mode:
            raise DeviceError(f"{out} holds results of another model or mode ({m.get('model')}, "
                              f"{m.get('mode')}); use another --out or drop --resume")
    done = {r["path"] for r in rows}
    if done:
        print(f"resuming: {len(done)} images already answered in {out}", file=sys.stderr)
    return done


def _stream(args: argparse.Namespace, link: Link, root: Path, work: list[Work], info: dict[str, Any],
            model: Model, results: ResultsFile) -> dict[str, Any]:
    from tqdm import tqdm

    bar = tqdm(total=len(work), unit="img", desc=f"device {args.mode}", disable=args.quiet)

    def on_row(w: Work, reply: Any) -> None:
        results.write(_row(w, reply))
        bar.update(1)

    def on_info(new: dict[str, Any]) -> None:
        check_device(new, model)
        bar.write(f"device reset detected (boot_id {new.get('boot_id')}); re-sending requests in flight")

    max_frame = max((w.tensor.nbytes if w.sent == "tensor" else P.MAX_PAYLOAD for w in work), default=0)
    timeout = args.timeout or default_timeout(args.window, args.baud or P.DEFAULT_BAUD, max_frame + P.OVERHEAD)
    budget = int(info.get("rx_buffer") or args.max_inflight_bytes)  # the firmware reports its UART buffer
    s = Streamer(link, root, args.window, timeout, info.get("boot_id"), on_row, on_info, budget)
    link.tx_bytes = link.rx_bytes = link.tx_payload = link.rx_payload = 0
    t0 = time.monotonic()
    stopped = ""
    try:
        s.run(work, dead_after=max(10.0, 8 * timeout))
    except KeyboardInterrupt:
        stopped = "interrupted"
    except DeviceError as exc:
        stopped = str(exc)
    finally:
        bar.close()
    elapsed = time.monotonic() - t0
    # requests still unanswered when a run stops may not have crossed the wire yet
    unsent = [len(p.work.payload or b"") for p in s.inflight.values()]
    link.tx_payload -= sum(unsent)
    link.tx_bytes -= sum(unsent) + P.OVERHEAD * len(unsent)
    return {"counters": s.c, "elapsed": elapsed, "stopped": stopped, "timeout": timeout,
            "link": link_stats(link, elapsed, args.baud), "sent": len(work)}


def _row(w: Work, reply: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": "result", "path": w.path, "label": w.label, "sent": w.sent,
                           "attempts": w.attempts, "pc_class": w.pc_class, "pc_scores": w.pc_scores}
    if w.tflm_scores is not None:
        row.update(tflm_class=int(read_class(w.tflm_scores)), tflm_scores=w.tflm_scores)
    if isinstance(reply, P.Result):
        row.update(device_class=reply.cls, scores=list(reply.scores),
                   preprocess_us=reply.preprocess_us, infer_us=reply.infer_us)
    else:
        row.update(device_class=None, scores=None, error=f"{reply.name}: {reply.message}")
    return row


def _finish(args: argparse.Namespace, out: Path, meta: dict[str, Any], stream: dict[str, Any],
            timing: P.Timing | None) -> int:
    _, rows, _ = read_results(out)
    c: Counters = stream["counters"]
    summary = summarize(rows, meta)
    summary.update(stream["link"])
    summary.update(retries=c.retries, resets=c.resets, resent_after_reset=c.resent_after_reset,
                   late_replies=c.late_replies, crc_errors_host=c.crc_errors_host,
                   crc_errors_device=c.crc_errors_device, timeout_s=round(stream["timeout"], 3),
                   timed_run_us_median=timing.median_us if timing else None,
                   timed_run={"runs": timing.runs, "median_us": timing.median_us, "max_us": timing.max_us,
                              "min_us": timing.min_us, "mean_us": timing.mean_us} if timing else None,
                   complete=not stream["stopped"], results=str(out))
    if not stream["stopped"]:
        with open(out, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": "summary", **summary}, separators=(",", ":")) + "\n")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=1))
    print_summary(summary)
    if stream["stopped"]:
        print(f"stopped: {stream['stopped']}. {len(rows)} answers are saved in {out}; "
              f"re-run with --resume to continue.", file=sys.stderr)
        return 130 if stream["stopped"] == "interrupted" else 3
    return 0


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f} %" if pct else f"{v:g}" if isinstance(v, float) else str(v)


def _link_text(s: dict[str, Any]) -> str:
    if s.get("link_utilization") is None:
        return f"{s['link_bytes_per_s']:.0f} B/s (unpaced pty: no line rate)"
    return (f"{s['link_bytes_per_s']:.0f} B/s = {100 * s['link_utilization']:.1f} % of {s['baud']} baud "
            f"(payload {100 * s['link_payload_utilization']:.1f} %)")


def print_summary(s: dict[str, Any]) -> None:
    src = s["timings_source"]
    lines = [
        ("board / chip", f"{s['board']} / {s['chip']} (fw {s['fw']}, proto {s['proto']})"),
        ("model", f"{s['model']} sha256 {str(s['model_sha256'])[:16]}..."),
        ("images", f"{s['images']} ({s['mode']} mode, {s['errors']} errors)"),
        ("device accuracy", _fmt(s["device_accuracy"], True)),
        ("PC accuracy", _fmt(s["host_accuracy"], True)),
        ("agreement", _fmt(s["agreement"], True)),
        ("agreement, PC TFLite Micro", _fmt(s["agreement_tflm"], True)),
        ("scores identical, PC TFLite Micro", _fmt(s["scores_identical_tflm"], True)),
        (f"infer us median [{src}]", _fmt(s["device_infer_us_median"])),
        (f"preprocess us median [{src}]", _fmt(s["device_preprocess_us_median"])),
        (f"TIMED_RUN us median [{src}]", _fmt(s["timed_run_us_median"])),
        ("link", _link_text(s)),
        ("retries / resets", f"{s['retries']} / {s['resets']}"),
    ]
    width = max(len(k) for k, _ in lines)
    for k, v in lines:
        print(f"{k:<{width}}  {v}")


# ================================================================ flash

def run_flash(args: argparse.Namespace) -> int:
    import shutil

    model = load_model(args.model)
    pio = shutil.which("pio") or shutil.which("platformio") or _venv_tool("pio")
    if not pio:
        raise DeviceError("PlatformIO not found: pip install platformio==6.2.0 (see requirements.txt)")
    root = Path(args.project) if args.project else REPO_ROOT
    if not (root / "platformio.ini").exists():
        raise DeviceError(f"no platformio.ini in {root} (pass --project, the repository root)")
    env = dict(os.environ, DIGITREC_MODEL=_model_selector(model, root))
    cmd = [pio, "run", "-e", args.env, "-t", "upload", "--upload-port", args.port]
    print("$ DIGITREC_MODEL=" + env["DIGITREC_MODEL"] + " " + " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=root, env=env).returncode != 0:
        raise DeviceError(f"build or upload failed for env {args.env} (see the PlatformIO output above)")
    time.sleep(args.settle)  # the board reboots after esptool's hard reset
    link = open_port(args.port, args.baud)
    try:
        info = hello(link, tries=6)
        check_device(info, model)
    finally:
        link.close()
    print(f"ok: {args.port} runs {info.get('model')} (sha256 {model.sha256[:16]}...), "
          f"{info.get('chip')} {info.get('board')}, arena {info.get('arena_used')}/{info.get('arena_bytes')} B")
    return 0


def _venv_tool(name: str) -> str | None:
    p = Path(sys.executable).parent / name
    return str(p) if p.exists() else None


def _model_selector(model: Model, root: Path) -> str:
    """What platformio.ini expects in DIGITREC_MODEL: the model dir relative to exported_models/."""
    base = root / "exported_models"
    try:
        return model.path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(model.path.resolve())


# ================================================================ CLI

def _guard(fn: Any) -> Any:
    def wrapped(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except DeviceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapped


def register(sub: argparse._SubParsersAction) -> None:
    from digitrec import virtual

    p = sub.add_parser("device", help="list, flash and benchmark a board (or the virtual device)",
                       description="The device stage: an ESP32 (or the virtual device) over serial.")
    verbs = p.add_subparsers(dest="device_verb", metavar="ACTION", required=True)

    ls = verbs.add_parser("list", help="serial ports, ESP32 USB bridges marked")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=_guard(run_list))

    fl = verbs.add_parser("flash", help="build + upload with PlatformIO, then check the model by HELLO")
    fl.add_argument("--env", required=True, help="PlatformIO env: esp32cam, esp32-s3-devkitc-1")
    fl.add_argument("--model", required=True, help="model dir, or a name under exported_models/*/")
    fl.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0")
    fl.add_argument("--baud", type=int, default=P.DEFAULT_BAUD, help="protocol baud rate (default 921600)")
    fl.add_argument("--project", default=None, help="folder with platformio.ini (default: this checkout)")
    fl.add_argument("--settle", type=float, default=2.0, help="seconds to wait for the reboot after upload")
    fl.set_defaults(func=_guard(run_flash))

    b = verbs.add_parser("bench", help="stream test images to the device and compare with the PC",
                         description="Check the board's model (SHA-256), stream the images pipelined, save each "
                                     "answer to JSONL as it arrives (retries, resets, --resume), then TIMED_RUN. "
                                     "See docs/device.md.")
    b.add_argument("--port", required=True, help="serial port, or 'virtual' to start a virtual device")
    b.add_argument("--model", required=True, help="model dir (model.tflite + card.json), or 10cls_GRAY/v4")
    b.add_argument("--data", default=os.environ.get("DIGITREC_DATA"), help="dataset root (default $DIGITREC_DATA)")
    b.add_argument("--split", choices=["test", "all"], default="test", help="images to send (default test)")
    b.add_argument("--mode", choices=["tensor", "raw"], default="tensor",
                   help="tensor: send the int8 input; raw: send the crop, the device preprocesses")
    b.add_argument("--raw-format", choices=["auto", "RGB888", "GRAY8"], default="auto",
                   help="raw pixel format (auto: RGB888, GRAY8 when only that fits)")
    b.add_argument("--baud", type=int, default=P.DEFAULT_BAUD,
                   help="baud rate; with --port virtual the virtual UART is paced at it (0: unpaced)")
    b.add_argument("--limit", type=int, default=None, help="N images spread evenly over the split (all by default)")
    b.add_argument("--window", type=positive_int, default=DEFAULT_WINDOW, help="requests in flight (default 4)")
    b.add_argument("--max-inflight-bytes", type=int, default=MAX_INFLIGHT_BYTES,
                   help="request bytes in flight at most (default 16384; the board's INFO rx_buffer overrides)")
    b.add_argument("--timeout", type=float, default=None, help="seconds before a request is re-sent (default: from baud)")
    b.add_argument("--no-tflm", action="store_true",
                   help="skip the second PC answer from the host's TFLite Micro (saves a slow pass)")
    b.add_argument("--json", help="write the summary JSON here")
    b.add_argument("--out", default="device_results.jsonl", help="results JSONL (default device_results.jsonl)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted --out without repeating work")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=_guard(run_bench))

    v = verbs.add_parser("virtual", help="serve the protocol on a pseudo-terminal (no board needed)",
                         description=virtual.__doc__.splitlines()[0])
    virtual.add_arguments(v)
    v.set_defaults(func=virtual.run)
