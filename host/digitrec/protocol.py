"""Python codec of the serial protocol in ``docs/protocol.md`` (version 1).

Pure Python, independent of the C codec in ``firmware/core/`` so that each can check
the other. Frame layout (little-endian)::

    A5 5A | type u8 | seq u16 | length u16 | hcrc u8 | payload | crc32 u32

``hcrc`` is CRC-8 (poly 0x07, init 0, no reflection) of type..length; ``crc32`` is
``zlib.crc32`` of type..payload (hcrc included).
"""

from __future__ import annotations

import enum
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PROTO_VERSION = 1
SYNC = b"\xa5\x5a"
HEADER_LEN = 8  # sync + type + seq + length + hcrc
CRC_LEN = 4
OVERHEAD = HEADER_LEN + CRC_LEN
MAX_PAYLOAD = 20480
MAX_RAW_SIDE = 128
RAW_HEADER_LEN = 5
DEFAULT_BAUD = 921600
BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


class MsgType(enum.IntEnum):
    HELLO = 0x01
    INFER_TENSOR = 0x02
    INFER_RAW = 0x03
    TIMED_RUN = 0x04
    INFO = 0x81
    RESULT = 0x82
    TIMING = 0x84
    BOOT = 0x90
    ERROR = 0xEE


class ErrorCode(enum.IntEnum):
    CRC = 1
    UNKNOWN_TYPE = 2
    BAD_LENGTH = 3
    BAD_IMAGE = 4
    INVOKE_FAILED = 5
    NOT_READY = 6


class RawFormat(enum.IntEnum):
    GRAY8 = 0
    RGB888 = 1
    RGB565 = 2


BYTES_PER_PIXEL = {RawFormat.GRAY8: 1, RawFormat.RGB888: 3, RawFormat.RGB565: 2}


class ProtocolError(ValueError):
    """A payload that does not follow docs/protocol.md."""


# ---------------------------------------------------------------- CRCs

def _crc8_table() -> bytes:
    table = bytearray(256)
    for i in range(256):
        c = i
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
        table[i] = c
    return bytes(table)


_CRC8 = _crc8_table()


def crc8(data: bytes) -> int:
    """CRC-8, poly 0x07, init 0x00, no reflection, no final xor (CRC-8/SMBUS)."""
    c = 0
    for b in data:
        c = _CRC8[c ^ b]
    return c


def crc32(data: bytes) -> int:
    """CRC-32 IEEE 802.3, as ``zlib.crc32``."""
    return zlib.crc32(data) & 0xFFFFFFFF


# ---------------------------------------------------------------- frames

_HDR = struct.Struct("<BHH")  # type, seq, length


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""

    def __repr__(self) -> str:
        try:
            name = MsgType(self.type).name
        except ValueError:
            name = f"0x{self.type:02X}"
        return f"Frame({name}, seq={self.seq}, {len(self.payload)} B)"


@dataclass(frozen=True)
class CrcMismatch:
    """A frame whose header was valid but whose payload CRC-32 failed."""

    type: int
    seq: int
    length: int


def encode_frame(msg_type: int, seq: int, payload: bytes = b"") -> bytes:
    """Build one frame; ``seq`` wraps at 16 bits."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD {MAX_PAYLOAD}")
    head = _HDR.pack(msg_type & 0xFF, seq & 0xFFFF, len(payload))
    body = head + bytes([crc8(head)]) + payload
    return SYNC + body + struct.pack("<I", crc32(body))


class Decoder:
    """Incremental, resynchronizing frame decoder (the receiving rules of the spec).

    ``feed(data)`` returns the complete events found so far: :class:`Frame` for good
    frames, :class:`CrcMismatch` for frames with a valid header but a bad CRC-32.
    Bytes that are not part of a frame (boot logs, line noise) are counted in
    ``garbage``.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.buf = bytearray()
        self.max_payload = max_payload
        self.garbage = 0
        self.frames = 0
        self.crc_errors = 0
        self.header_errors = 0

    def feed(self, data: bytes) -> list[Frame | CrcMismatch]:
        self.buf += data
        return list(self._drain())

    def _skip(self, n: int) -> None:
        del self.buf[:n]
        self.garbage += n

    def _drain(self) -> Iterator[Frame | CrcMismatch]:
        buf = self.buf
        while True:
            i = buf.find(SYNC)
            if i < 0:
                # keep a trailing 0xA5: it may be the first half of a sync
                keep = 1 if buf[-1:] == SYNC[:1] else 0
                self._skip(len(buf) - keep)
                return
            if i:
                self._skip(i)
            if len(buf) < HEADER_LEN:
                return
            head = bytes(buf[2:7])
            msg_type, seq, length = _HDR.unpack(head)
            if crc8(head) != buf[7] or length > self.max_payload:
                self.header_errors += 1
                self._skip(1)  # false sync or damaged header: rescan from next byte
                continue
            end = HEADER_LEN + length + CRC_LEN
            if len(buf) < end:
                return
            (got,) = struct.unpack_from("<I", buf, end - CRC_LEN)
            if got != crc32(buf[2:end - CRC_LEN]):
                self.crc_errors += 1
                self._skip(1)  # rescan from the byte after this frame's sync
                yield CrcMismatch(msg_type, seq, length)
                continue
            payload = bytes(buf[HEADER_LEN:end - CRC_LEN])
            del buf[:end]
            self.frames += 1
            yield Frame(msg_type, seq, payload)


# ---------------------------------------------------------------- payloads

_RESULT = struct.Struct("<HHII")
_TIMED_RUN = struct.Struct("<HH")
_TIMING = struct.Struct("<HIIII")
_RAW = struct.Struct("<BHH")
_ERROR = struct.Struct("<BB")


@dataclass(frozen=True)
class Result:
    cls: int
    scores: tuple[int, ...]
    preprocess_us: int
    infer_us: int


@dataclass(frozen=True)
class Timing:
    runs: int
    median_us: int
    max_us: int
    min_us: int
    mean_us: int


@dataclass(frozen=True)
class ErrorReply:
    code: int
    request_type: int
    message: str

    @property
    def name(self) -> str:
        try:
            return ErrorCode(self.code).name
        except ValueError:
            return f"code {self.code}"


@dataclass(frozen=True)
class RawImage:
    fmt: int
    width: int
    height: int
    pixels: bytes


def _need(payload: bytes, n: int, what: str, exact: bool = False) -> None:
    if len(payload) < n or (exact and len(payload) != n):
        raise ProtocolError(f"{what} payload of {len(payload)} bytes, expected {'' if exact else '>= '}{n}")


def pack_result(r: Result) -> bytes:
    return _RESULT.pack(r.cls, len(r.scores), r.preprocess_us, r.infer_us) + struct.pack(
        f"<{len(r.scores)}b", *r.scores
    )


def unpack_result(payload: bytes) -> Result:
    _need(payload, _RESULT.size, "RESULT")
    cls, n, pre, inf = _RESULT.unpack_from(payload)
    _need(payload, _RESULT.size + n, "RESULT", exact=True)
    scores = struct.unpack_from(f"<{n}b", payload, _RESULT.size)
    return Result(cls, tuple(scores), pre, inf)


def pack_timed_run(warmup: int, runs: int) -> bytes:
    return _TIMED_RUN.pack(warmup, runs)


def unpack_timed_run(payload: bytes) -> tuple[int, int]:
    _need(payload, _TIMED_RUN.size, "TIMED_RUN", exact=True)
    return _TIMED_RUN.unpack(payload)


def pack_timing(t: Timing) -> bytes:
    return _TIMING.pack(t.runs, t.median_us, t.max_us, t.min_us, t.mean_us)


def unpack_timing(payload: bytes) -> Timing:
    _need(payload, _TIMING.size, "TIMING", exact=True)
    return Timing(*_TIMING.unpack(payload))


def pack_error(code: int, request_type: int, message: str = "") -> bytes:
    return _ERROR.pack(code, request_type) + message.encode()


def unpack_error(payload: bytes) -> ErrorReply:
    _need(payload, _ERROR.size, "ERROR")
    code, req = _ERROR.unpack_from(payload)
    return ErrorReply(code, req, payload[_ERROR.size:].decode("utf-8", "replace"))


def pack_raw(fmt: int, width: int, height: int, pixels: bytes) -> bytes:
    """INFER_RAW payload; checks the limits the device checks."""
    raw = RawImage(fmt, width, height, bytes(pixels))
    check_raw(raw)
    return _RAW.pack(fmt, width, height) + raw.pixels


def check_raw(raw: RawImage) -> None:
    if raw.fmt not in BYTES_PER_PIXEL:
        raise ProtocolError(f"unknown raw format {raw.fmt}")
    if not (1 <= raw.width <= MAX_RAW_SIDE and 1 <= raw.height <= MAX_RAW_SIDE):
        raise ProtocolError(f"raw image {raw.width}x{raw.height} outside 1..{MAX_RAW_SIDE}")
    need = raw.width * raw.height * BYTES_PER_PIXEL[RawFormat(raw.fmt)]
    if len(raw.pixels) != need:
        raise ProtocolError(f"raw image needs {need} pixel bytes, got {len(raw.pixels)}")


def unpack_raw(payload: bytes) -> RawImage:
    _need(payload, _RAW.size, "INFER_RAW")
    fmt, w, h = _RAW.unpack_from(payload)
    return RawImage(fmt, w, h, bytes(payload[_RAW.size:]))


def pack_info(info: dict[str, Any]) -> bytes:
    return json.dumps(info, separators=(",", ":")).encode()


def unpack_info(payload: bytes) -> dict[str, Any]:
    try:
        info = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"INFO is not UTF-8 JSON: {exc}") from exc
    if not isinstance(info, dict):
        raise ProtocolError("INFO JSON is not an object")
    return info


def line_rate_bytes_per_s(baud: int) -> float:
    """Payload ceiling of an 8N1 UART: 10 bits per byte."""
    return baud / BITS_PER_BYTE
