"""ctypes bridge to the firmware's portable C core (``firmware/core/``).

The same C code that runs on the ESP32 (frame codec, CRCs, preprocessing, statistics
and the request dispatcher) is built natively as ``build/core/libdigitrec_core.so``
on first use (``make -C firmware/core lib``; rebuilt when a source is newer) and
called from here. The virtual device (``digitrec.virtual``) and the tests use it.

Public API
----------
Constants: ``MAX_PAYLOAD`` (20480), ``MAX_RAW_SIDE`` (128), ``FMT_GRAY8`` / ``FMT_RGB888``
/ ``FMT_RGB565`` (0/1/2), ``FORMATS`` (name -> code). ``fw_version() -> str`` and
``proto_version() -> int`` return what the C core was compiled with. ``build(force=False)``
builds the library (automatic on first use); ``lib()`` is the raw ctypes handle.

``crc8(data: bytes) -> int``
    CRC-8, poly 0x07, init 0 (the frame header check).
``crc32(data: bytes) -> int``
    CRC-32 IEEE, equal to ``zlib.crc32(data)``.
``encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes``
    One complete frame as in ``docs/protocol.md``.
``quant_lut(scale: float, zero_point: int) -> np.ndarray``
    The 256-entry int8 table (same as ``digitrec.preprocess.quant_lut``).
``prepare_raw(pixels, fmt, width, height, color) -> np.ndarray``
    Raw crop -> 32x20xC uint8 (before quantization). ``fmt`` is a code or a name
    ("GRAY8", "RGB888", "RGB565"); ``color`` is "gray"/"rgb" (case-insensitive).
``preprocess_raw(pixels, fmt, width, height, color, scale, zero_point) -> np.ndarray``
    Raw crop -> 32x20xC int8 model input, exactly what the device computes for INFER_RAW.
``stats(values) -> tuple[int, int, int, int]``
    (median, max, min, mean) in microseconds, as the device reports TIMING.
``parse_stream(data: bytes) -> list[tuple[str, int, int, bytes]]``
    Runs the C resynchronizing parser over a byte string; returns events
    ``("frame"|"crc_error", type, seq, payload)`` (payload is b"" for crc_error).

``ModelMeta`` (dataclass): name, sha256, classes, color ("GRAY"/"RGB"), input_shape
(h, w, c), in_scale, in_zp, out_scale, out_zp. ``ModelMeta.from_card(card_dict)``.

``CoreDevice(model, invoke, write, clock_us=None, boot_id=None, max_runs=65535, **status)``
    The device's request dispatcher driven from Python:

    * ``invoke(x: np.ndarray) -> np.ndarray``: x is int8 (h, w, c); return the int8
      scores (``classes`` values). Raising makes the device answer ERROR INVOKE_FAILED
      (the exception is kept in ``last_exception``).
    * ``write(data: bytes) -> None``: called with each complete reply frame.
    * ``clock_us() -> int``: microsecond clock (default: monotonic, 0 at construction).
    * ``status`` keywords, all optional, become INFO fields: chip (default "virtual"),
      board, cpu_mhz, flash_bytes, psram_bytes, free_heap, arena_bytes, arena_used.

    Methods: ``boot()`` sends the BOOT frame (seq 0); ``feed(data: bytes)`` parses
    bytes and handles each complete request (replies go through ``write`` before
    ``feed`` returns); ``set_ready(ready: bool, error: str = "")``; ``set_status(**status)``;
    ``info() -> dict`` (the INFO JSON as a dict). Attributes: ``boot_id``,
    ``last_exception``.

    Not thread-safe: call ``feed``/``boot`` from one thread at a time.
"""

from __future__ import annotations

import ctypes as C
import fcntl
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
CORE_DIR = REPO_ROOT / "firmware" / "core"
BUILD_DIR = REPO_ROOT / "build" / "core"
LIB_PATH = BUILD_DIR / "libdigitrec_core.so"

MAX_PAYLOAD = 20480
MAX_RAW_SIDE = 128
FMT_GRAY8, FMT_RGB888, FMT_RGB565 = 0, 1, 2
FORMATS = {"GRAY8": FMT_GRAY8, "RGB888": FMT_RGB888, "RGB565": FMT_RGB565}
OUT_H, OUT_W = 32, 20

_lib: C.CDLL | None = None


# ----------------------------------------------------------------------------- build
def _sources() -> list[Path]:
    return sorted(CORE_DIR.glob("*.[ch]")) + [CORE_DIR / "Makefile", CORE_DIR / "dr_ops.def"]


def _needs_build() -> bool:
    if not LIB_PATH.exists():
        return True
    built = LIB_PATH.stat().st_mtime
    return any(p.exists() and p.stat().st_mtime > built for p in _sources())


def build(force: bool = False) -> Path:
    """Build the shared library if missing or stale; return its path."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".lock", "w") as lock:  # several processes may import at once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if force or _needs_build():
            _run_build()
    return LIB_PATH


def _run_build() -> None:
    if shutil.which("make"):
        cmd = ["make", "-s", "-C", str(CORE_DIR), "lib", f"BUILD={BUILD_DIR}"]
    else:  # no make: the same flags, one compiler call
        cc = os.environ.get("CC", "cc")
        srcs = [str(p) for p in sorted(CORE_DIR.glob("dr_*.c"))]
        cmd = [cc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-fPIC", "-shared", *srcs,
               "-lm", "-o", str(LIB_PATH)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the firmware core failed ({' '.join(cmd)}):\n{proc.stdout}{proc.stderr}")


def lib() -> C.CDLL:
    """The loaded core library (built on first use)."""
    global _lib
    if _lib is None:
        _lib = _declare(C.CDLL(str(build())))
    return _lib


# ------------------------------------------------------------------ ctypes structures
INVOKE_FN = C.CFUNCTYPE(C.c_int, C.c_void_p, C.POINTER(C.c_int8), C.POINTER(C.c_int8))
NOW_FN = C.CFUNCTYPE(C.c_uint64, C.c_void_p)
WRITE_FN = C.CFUNCTYPE(None, C.c_void_p, C.POINTER(C.c_uint8), C.c_size_t)
STATUS_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_void_p)
EVENT_FN = C.CFUNCTYPE(None, C.c_void_p, C.c_int, C.c_void_p)


class _Port(C.Structure):
    _fields_ = [("ctx", C.c_void_p), ("invoke", INVOKE_FN), ("now_us", NOW_FN),
                ("write", WRITE_FN), ("status", STATUS_FN)]


class _Model(C.Structure):
    _fields_ = [("name", C.c_char_p), ("sha256", C.c_char_p), ("color", C.c_char_p),
                ("classes", C.c_uint16), ("in_h", C.c_uint16), ("in_w", C.c_uint16),
                ("in_c", C.c_uint16), ("in_scale", C.c_double), ("in_zp", C.c_int32),
                ("out_scale", C.c_double), ("out_zp", C.c_int32)]


class _Status(C.Structure):
    _fields_ = [("chip", C.c_char_p), ("board", C.c_char_p), ("extra_json", C.c_char_p),
                ("cpu_mhz", C.c_uint32), ("flash_bytes", C.c_uint32), ("psram_bytes", C.c_uint32),
                ("free_heap", C.c_uint32), ("arena_bytes", C.c_uint32), ("arena_used", C.c_uint32)]


class _Frame(C.Structure):
    _fields_ = [("type", C.c_uint8), ("seq", C.c_uint16), ("length", C.c_uint16),
                ("payload", C.POINTER(C.c_uint8))]


def _declare(L: C.CDLL) -> C.CDLL:
    u8p, i8p, u32p = C.POINTER(C.c_uint8), C.POINTER(C.c_int8), C.POINTER(C.c_uint32)
    sigs: dict[str, tuple[Any, list[Any]]] = {
        "dr_crc8": (C.c_uint8, [C.c_char_p, C.c_size_t]),
        "dr_crc32": (C.c_uint32, [C.c_uint32, C.c_char_p, C.c_size_t]),
        "dr_frame_encode": (C.c_size_t, [C.c_uint8, C.c_uint16, C.c_char_p, C.c_size_t, u8p, C.c_size_t]),
        "dr_quant_lut": (None, [C.c_double, C.c_int32, i8p]),
        "dr_prepare_u8": (C.c_int, [C.c_char_p, C.c_size_t, C.c_int, C.c_int, C.c_int, C.c_int, C.c_int,
                                    C.c_int, u8p]),
        "dr_preprocess": (C.c_int, [C.c_char_p, C.c_size_t, C.c_int, C.c_int, C.c_int, C.c_int, C.c_int,
                                    C.c_int, i8p, i8p]),
        "dr_stats_compute": (None, [u32p, C.c_uint32, C.c_void_p]),
        "dr_parser_sizeof": (C.c_size_t, []),
        "dr_parser_init": (None, [C.c_void_p]),
        "dr_parser_feed": (None, [C.c_void_p, C.c_char_p, C.c_size_t, EVENT_FN, C.c_void_p]),
        "dr_device_sizeof": (C.c_size_t, []),
        "dr_device_init": (C.c_int, [C.c_void_p, C.POINTER(_Port), C.POINTER(_Model), C.c_uint32,
                                     u32p, C.c_uint32]),
        "dr_device_boot": (None, [C.c_void_p]),
        "dr_device_feed": (None, [C.c_void_p, C.c_char_p, C.c_size_t]),
        "dr_device_set_ready": (None, [C.c_void_p, C.c_int, C.c_char_p]),
        "dr_device_set_status": (None, [C.c_void_p, C.POINTER(_Status)]),
        "dr_device_info_json": (C.c_size_t, [C.c_void_p, C.c_char_p, C.c_size_t]),
        "dr_fw_version": (C.c_char_p, []),
        "dr_proto_version": (C.c_int, []),
    }
    for name, (res, args) in sigs.items():
        fn = getattr(L, name)
        fn.restype, fn.argtypes = res, args
    return L


# ------------------------------------------------------------------------ functions
def crc8(data: bytes) -> int:
    """CRC-8 (poly 0x07, init 0, no reflection)."""
    return int(lib().dr_crc8(bytes(data), len(data)))


def crc32(data: bytes) -> int:
    """CRC-32 IEEE 802.3 (equal to ``zlib.crc32``)."""
    return int(lib().dr_crc32(0, bytes(data), len(data)))


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """Encode one frame with the C encoder."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    out = (C.c_uint8 * (len(payload) + 12))()
    n = lib().dr_frame_encode(msg_type & 0xFF, seq & 0xFFFF, bytes(payload), len(payload), out, len(out))
    if n == 0:
        raise ValueError("frame encoding failed")
    return bytes(out)[:n]


def quant_lut(scale: float, zero_point: int) -> np.ndarray:
    """The 256-entry int8 quantization table computed by the C core."""
    lut = np.zeros(256, dtype=np.int8)
    lib().dr_quant_lut(float(scale), int(zero_point), lut.ctypes.data_as(C.POINTER(C.c_int8)))
    return lut


def _fmt_code(fmt: int | str) -> int:
    if isinstance(fmt, str):
        if fmt.upper() not in FORMATS:
            raise ValueError(f"unknown raw format {fmt!r}; expected one of {sorted(FORMATS)}")
        return FORMATS[fmt.upper()]
    return int(fmt)


def _channels(color: str) -> int:
    c = color.lower()
    if c not in ("gray", "rgb"):
        raise ValueError(f"color must be 'gray' or 'rgb', not {color!r}")
    return 1 if c == "gray" else 3


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise ValueError(f"{what} rejected by the C core (code {rc}: bad format, size or pixel count)")


def prepare_raw(pixels: bytes, fmt: int | str, width: int, height: int, color: str) -> np.ndarray:
    """Raw crop -> 32x20xC uint8, as the device computes it before quantization."""
    c = _channels(color)
    out = np.zeros((OUT_H, OUT_W, c), dtype=np.uint8)
    rc = lib().dr_prepare_u8(bytes(pixels), len(pixels), _fmt_code(fmt), width, height,
                             OUT_H, OUT_W, c, out.ctypes.data_as(C.POINTER(C.c_uint8)))
    _check(rc, "prepare_raw")
    return out


def preprocess_raw(pixels: bytes, fmt: int | str, width: int, height: int, color: str,
                   scale: float, zero_point: int) -> np.ndarray:
    """Raw crop -> 32x20xC int8 model input (the device's INFER_RAW path)."""
    c = _channels(color)
    lut = quant_lut(scale, zero_point)
    out = np.zeros((OUT_H, OUT_W, c), dtype=np.int8)
    i8p = C.POINTER(C.c_int8)
    rc = lib().dr_preprocess(bytes(pixels), len(pixels), _fmt_code(fmt), width, height,
                             OUT_H, OUT_W, c, lut.ctypes.data_as(i8p), out.ctypes.data_as(i8p))
    _check(rc, "preprocess_raw")
    return out


class _StatsOut(C.Structure):
    _fields_ = [("median", C.c_uint32), ("max", C.c_uint32), ("min", C.c_uint32), ("mean", C.c_uint32)]


def stats(values: list[int] | np.ndarray) -> tuple[int, int, int, int]:
    """(median, max, min, mean) as the device computes them for TIMING."""
    arr = np.ascontiguousarray(values, dtype=np.uint32).copy()  # the C side sorts in place
    out = _StatsOut()
    lib().dr_stats_compute(arr.ctypes.data_as(C.POINTER(C.c_uint32)), len(arr), C.byref(out))
    return out.median, out.max, out.min, out.mean


def parse_stream(data: bytes) -> list[tuple[str, int, int, bytes]]:
    """Run the C parser over ``data``; return ("frame"|"crc_error", type, seq, payload) events."""
    L = lib()
    parser = C.create_string_buffer(L.dr_parser_sizeof())
    L.dr_parser_init(parser)
    events: list[tuple[str, int, int, bytes]] = []

    def on_event(_ctx: int, kind: int, frame_ptr: int) -> None:
        f = C.cast(frame_ptr, C.POINTER(_Frame)).contents
        body = C.string_at(f.payload, f.length) if kind == 1 and f.length else b""
        events.append(("frame" if kind == 1 else "crc_error", f.type, f.seq, body))

    cb = EVENT_FN(on_event)
    L.dr_parser_feed(parser, bytes(data), len(data), cb, None)
    return events


# --------------------------------------------------------------------------- device
@dataclass(frozen=True)
class ModelMeta:
    """What the dispatcher needs to know about the model (mirrors model_data.h)."""

    name: str
    sha256: str
    classes: int
    color: str  # "GRAY" or "RGB"
    input_shape: tuple[int, int, int]
    in_scale: float
    in_zp: int
    out_scale: float
    out_zp: int

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> ModelMeta:
        """Build from a model card (``card.json``) dict."""
        inp, out = card["input"], card["output"]
        return cls(name=card["name"], sha256=card["sha256"], classes=int(card["classes"]),
                   color=str(card["color"]).upper(), input_shape=tuple(int(v) for v in inp["shape"]),
                   in_scale=float(inp["scale"]), in_zp=int(inp["zero_point"]),
                   out_scale=float(out["scale"]), out_zp=int(out["zero_point"]))


_STATUS_INT = ("cpu_mhz", "flash_bytes", "psram_bytes", "free_heap", "arena_bytes", "arena_used")
_STATUS_STR = ("chip", "board", "extra_json")


class CoreDevice:
    """The C request dispatcher with Python invoke/write/clock callbacks (see module doc)."""

    def __init__(self, model: ModelMeta, invoke: Callable[[np.ndarray], np.ndarray],
                 write: Callable[[bytes], None], clock_us: Callable[[], int] | None = None,
                 boot_id: int | None = None, max_runs: int = 65535, **status: Any) -> None:
        L = lib()
        self.model = model
        self.boot_id = secrets.randbits(32) if boot_id is None else boot_id & 0xFFFFFFFF
        self.last_exception: BaseException | None = None
        self._invoke, self._write = invoke, write
        t0 = time.perf_counter_ns()
        self._clock = clock_us or (lambda: (time.perf_counter_ns() - t0) // 1000)
        self._keep: dict[str, Any] = {}  # C strings and callbacks must outlive the device
        self._dev = C.create_string_buffer(L.dr_device_sizeof())
        self._timings = (C.c_uint32 * max(1, max_runs))()
        self._port = _Port(None, INVOKE_FN(self._on_invoke), NOW_FN(self._on_now),
                           WRITE_FN(self._on_write), STATUS_FN())
        h, w, c = model.input_shape
        self._cmodel = _Model(self._cstr("name", model.name), self._cstr("sha", model.sha256),
                              self._cstr("color", model.color), model.classes, h, w, c,
                              model.in_scale, model.in_zp, model.out_scale, model.out_zp)
        rc = L.dr_device_init(self._dev, C.byref(self._port), C.byref(self._cmodel), self.boot_id,
                              self._timings, max_runs)
        if rc != 0:
            raise ValueError(f"dr_device_init rejected the model metadata (code {rc}): {model}")
        self._status: dict[str, Any] = {"chip": "virtual"}
        self.set_status(**status)

    def _cstr(self, key: str, value: str) -> bytes:
        self._keep[key] = value.encode()
        return self._keep[key]

    # callbacks (exceptions must not cross into C)
    def _on_invoke(self, _ctx: int, inp: Any, out: Any) -> int:
        try:
            x = np.ctypeslib.as_array(inp, shape=self.model.input_shape).copy()
            y = np.asarray(self._invoke(x), dtype=np.int8).reshape(-1)
            if y.size != self.model.classes:
                raise ValueError(f"invoke returned {y.size} scores, expected {self.model.classes}")
            C.memmove(out, y.ctypes.data, y.size)
            return 0
        except Exception as exc:  # reported to the host as ERROR INVOKE_FAILED
            self.last_exception = exc
            return 1

    def _on_now(self, _ctx: int) -> int:
        return int(self._clock())

    def _on_write(self, _ctx: int, data: Any, n: int) -> None:
        try:
            self._write(C.string_at(data, n))
        except Exception as exc:
            self.last_exception = exc

    # public
    def set_status(self, **status: Any) -> None:
        """Update INFO fields: chip, board, extra_json, cpu_mhz, flash_bytes, psram_bytes,
        free_heap, arena_bytes, arena_used."""
        unknown = set(status) - set(_STATUS_INT) - set(_STATUS_STR)
        if unknown:
            raise TypeError(f"unknown status fields {sorted(unknown)}")
        self._status.update(status)
        st = _Status()
        for key in _STATUS_STR:
            setattr(st, key, self._cstr(f"status_{key}", str(self._status.get(key, ""))))
        for key in _STATUS_INT:
            setattr(st, key, int(self._status.get(key, 0)) & 0xFFFFFFFF)
        lib().dr_device_set_status(self._dev, C.byref(st))

    def set_ready(self, ready: bool, error: str = "") -> None:
        """Mark the model usable (or not, with the reason shown in INFO ``error``)."""
        lib().dr_device_set_ready(self._dev, int(bool(ready)), self._cstr("error", error))

    def boot(self) -> None:
        """Emit the unsolicited BOOT frame (seq 0)."""
        lib().dr_device_boot(self._dev)

    def feed(self, data: bytes) -> None:
        """Give received bytes to the parser; replies are written before this returns."""
        if data:
            lib().dr_device_feed(self._dev, bytes(data), len(data))

    def info(self) -> dict[str, Any]:
        """The INFO JSON the device would send now, as a dict."""
        buf = C.create_string_buffer(2048)
        n = lib().dr_device_info_json(self._dev, buf, len(buf))
        return json.loads(buf.raw[:n].decode())


def fw_version() -> str:
    """Firmware version string compiled into the core (``DR_FW_VERSION``)."""
    return lib().dr_fw_version().decode()


def proto_version() -> int:
    """Protocol version compiled into the core (``DR_PROTO_VERSION``)."""
    return int(lib().dr_proto_version())
