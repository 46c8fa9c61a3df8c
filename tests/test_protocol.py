"""The Python codec of docs/protocol.md, and its interoperation with the C codec."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from digitrec import protocol as P


def test_crc8_check_value() -> None:
    # CRC-8/SMBUS (poly 0x07, init 0, no reflection) check value of "123456789"
    assert P.crc8(b"123456789") == 0xF4
    assert P.crc8(b"") == 0


def test_crc32_is_zlib() -> None:
    assert P.crc32(b"123456789") == 0xCBF43926 == zlib.crc32(b"123456789")


def test_frame_layout_matches_spec() -> None:
    f = P.encode_frame(P.MsgType.INFER_TENSOR, 0x1234, b"\x01\x02\x03")
    assert f[:2] == b"\xa5\x5a"
    assert f[2] == 0x02
    assert struct.unpack_from("<H", f, 3)[0] == 0x1234
    assert struct.unpack_from("<H", f, 5)[0] == 3
    assert f[7] == P.crc8(f[2:7])
    assert f[8:11] == b"\x01\x02\x03"
    assert struct.unpack_from("<I", f, 11)[0] == zlib.crc32(f[2:11])
    assert len(f) == 3 + P.OVERHEAD


def test_round_trip_and_seq_wrap() -> None:
    d = P.Decoder()
    frames = [P.encode_frame(P.MsgType.RESULT, s, bytes(range(s % 50))) for s in (0, 1, 65535, 65536 + 7)]
    got = d.feed(b"".join(frames))
    assert [(g.type, g.seq, len(g.payload)) for g in got] == [(0x82, 0, 0), (0x82, 1, 1), (0x82, 65535, 35), (0x82, 7, 43)]
    assert d.garbage == 0


def test_byte_by_byte_feed() -> None:
    d = P.Decoder()
    frame = P.encode_frame(P.MsgType.HELLO, 9)
    out = []
    for b in frame * 3:
        out += d.feed(bytes([b]))
    assert out == [P.Frame(P.MsgType.HELLO, 9, b"")] * 3


def test_resync_after_garbage_and_false_sync() -> None:
    d = P.Decoder()
    good = P.encode_frame(P.MsgType.HELLO, 5)
    noise = b"ets Jun  8 2016 00:22:57\r\nrst:0x1 \xa5\x5a\xa5 boot log \xa5"
    got = d.feed(noise + good + b"\xa5\x5a\xff\xff\xff\xff\xff\xff" + good)
    assert got == [P.Frame(1, 5, b""), P.Frame(1, 5, b"")]
    assert d.header_errors >= 2


def test_bogus_length_is_not_waited_for() -> None:
    d = P.Decoder()
    head = struct.pack("<BHH", 0x02, 1, P.MAX_PAYLOAD + 1)
    fake = P.SYNC + head + bytes([P.crc8(head)])  # valid hcrc, length too big
    good = P.encode_frame(P.MsgType.HELLO, 2)
    assert d.feed(fake + good) == [P.Frame(1, 2, b"")]


def test_crc_error_reports_seq_then_resyncs() -> None:
    d = P.Decoder()
    bad = bytearray(P.encode_frame(P.MsgType.INFER_TENSOR, 77, b"x" * 40))
    bad[20] ^= 0x10
    good = P.encode_frame(P.MsgType.HELLO, 78)
    got = d.feed(bytes(bad) + good)
    assert got == [P.CrcMismatch(0x02, 77, 40), P.Frame(1, 78, b"")]


def test_truncated_frame_then_good_frame() -> None:
    d = P.Decoder()
    f = P.encode_frame(P.MsgType.INFER_TENSOR, 3, b"y" * 30)
    good = P.encode_frame(P.MsgType.HELLO, 4)
    # the truncated frame swallows the next bytes until its CRC fails; the rescan then
    # finds every later frame, so only frames overlapping the truncated one are lost
    got = d.feed(f[:20] + good * 5)
    assert got[0] == P.CrcMismatch(0x02, 3, 30)
    assert got[-2:] == [P.Frame(1, 4, b"")] * 2


def test_random_corruption_never_yields_a_wrong_frame() -> None:
    rng = random.Random(1)
    sent = [P.encode_frame(P.MsgType.RESULT, i, rng.randbytes(rng.randrange(0, 64))) for i in range(300)]
    stream = bytearray(b"".join(sent))
    for _ in range(60):
        stream[rng.randrange(len(stream))] ^= 1 << rng.randrange(8)
    for _ in range(20):
        del stream[rng.randrange(len(stream))]
    d = P.Decoder()
    got = []
    for i in range(0, len(stream), 37):
        got += [e for e in d.feed(bytes(stream[i:i + 37])) if isinstance(e, P.Frame)]
    valid = {P.Decoder().feed(s)[0] for s in sent}
    assert len(got) > 200  # most frames survive
    assert all(g in valid for g in got)


def test_payload_round_trips() -> None:
    r = P.Result(7, (-128, 0, 127, 5), 123, 4567)
    assert P.unpack_result(P.pack_result(r)) == r
    t = P.Timing(100, 1500, 1700, 1400, 1510)
    assert P.unpack_timing(P.pack_timing(t)) == t
    assert P.unpack_timed_run(P.pack_timed_run(10, 100)) == (10, 100)
    e = P.unpack_error(P.pack_error(P.ErrorCode.CRC, 0x02, "crc mismatch"))
    assert (e.code, e.request_type, e.message, e.name) == (1, 2, "crc mismatch", "CRC")
    raw = P.pack_raw(P.RawFormat.RGB888, 2, 3, bytes(18))
    assert P.unpack_raw(raw) == P.RawImage(1, 2, 3, bytes(18))
    info = {"proto": 1, "chip": "virtual", "model_sha256": "ab" * 32}
    assert P.unpack_info(P.pack_info(info)) == info


@pytest.mark.parametrize(
    "args",
    [(9, 2, 2, bytes(4)), (0, 0, 2, b""), (0, 129, 1, bytes(129)), (1, 2, 2, bytes(11))],
)
def test_bad_raw_images_are_refused(args: tuple) -> None:
    with pytest.raises(P.ProtocolError):
        P.pack_raw(*args)


def test_malformed_payloads_raise() -> None:
    with pytest.raises(P.ProtocolError):
        P.unpack_result(b"\x01\x00\x05\x00" + bytes(8) + b"\x01")  # says 5 scores, has 1
    with pytest.raises(P.ProtocolError):
        P.unpack_info(b"\xff{")
    with pytest.raises(P.ProtocolError):
        P.encode_frame(1, 0, bytes(P.MAX_PAYLOAD + 1))


# ---------------------------------------------------------------- C codec interop

def _core():
    core = pytest.importorskip("digitrec.core")
    try:
        core.crc8(b"")
    except Exception as exc:  # library not built
        pytest.skip(f"portable core unavailable: {exc}")
    return core


def test_crcs_match_c() -> None:
    core = _core()
    rng = random.Random(2)
    for n in (0, 1, 5, 100, 4096):
        data = rng.randbytes(n)
        assert core.crc8(data) == P.crc8(data)
        assert core.crc32(data) == P.crc32(data)


def test_c_frames_decode_in_python() -> None:
    core = _core()
    rng = random.Random(3)
    d = P.Decoder()
    for seq in (0, 1, 300, 65535):
        payload = rng.randbytes(rng.randrange(0, 700))
        c_frame = bytes(core.encode_frame(0x82, seq, payload))
        assert c_frame == P.encode_frame(0x82, seq, payload)
        assert d.feed(c_frame) == [P.Frame(0x82, seq, payload)]


def test_python_frames_parse_in_c() -> None:
    core = _core()
    rng = random.Random(4)
    frames = [(0x02, s, rng.randbytes(rng.randrange(0, 700))) for s in (1, 2, 40000)]
    stream = b"boot noise \xa5\x5a" + b"".join(P.encode_frame(*f) for f in frames)
    bad = bytearray(P.encode_frame(0x03, 9, b"z" * 30))
    bad[-1] ^= 0xFF
    events = core.parse_stream(stream + bytes(bad) + P.encode_frame(0x01, 10))
    assert events == [("frame", t, s, p) for t, s, p in frames] + [("crc_error", 0x03, 9, b""), ("frame", 1, 10, b"")]
