"""The firmware's portable C core, built natively: C unit tests, golden vectors, the op
list, the ctypes device, a bounded fuzz run, and PlatformIO's view of platformio.ini."""

from __future__ import annotations

import base64
import json
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from digitrec import core, ops, protocol
from digitrec import preprocess as pp

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "firmware" / "core"
BUILD = REPO / "build" / "core"
GOLDEN = json.loads((REPO / "tests" / "golden" / "preprocess.json").read_text())
FUZZ_SECONDS = int(os.environ.get("DIGITREC_FUZZ_SECONDS", "20"))


def make(*targets: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess[str]:
    args = ["make", "-C", str(CORE), f"BUILD={BUILD}", *targets, *(f"{k}={v}" for k, v in env.items())]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------ native C tests
def test_c_unit_tests_pass_with_warnings_as_errors_and_sanitizers() -> None:
    proc = make("check")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.count(" 0 failures") == 2, out  # plain and ASan+UBSan builds


def test_library_builds_and_reports_versions() -> None:
    core.build()
    assert core.LIB_PATH.exists()
    assert core.proto_version() == protocol.PROTO_VERSION
    assert core.fw_version().count(".") == 2


# ---------------------------------------------------------------------- codec
def test_crc_known_values_and_zlib_equivalence() -> None:
    assert core.crc32(b"123456789") == 0xCBF43926
    assert core.crc8(b"123456789") == 0xF4
    rng = random.Random(1)
    for n in (0, 1, 7, 64, 1000):
        data = rng.randbytes(n)
        assert core.crc32(data) == zlib.crc32(data)
        assert core.crc8(data) == protocol.crc8(data)


def test_encoder_matches_python_codec() -> None:
    rng = random.Random(2)
    for n in (0, 1, 255, 256, 1920, core.MAX_PAYLOAD):
        payload = rng.randbytes(n)
        t, seq = rng.randrange(256), rng.randrange(65536)
        assert core.encode_frame(t, seq, payload) == protocol.encode_frame(t, seq, payload)
    with pytest.raises(ValueError):
        core.encode_frame(1, 0, bytes(core.MAX_PAYLOAD + 1))


def _random_stream(rng: random.Random) -> bytes:
    parts = []
    for _ in range(rng.randrange(1, 8)):
        kind = rng.randrange(5)
        if kind == 0:  # garbage, rich in sync bytes
            parts.append(bytes(rng.choice([0xA5, 0x5A, rng.randrange(256)]) for _ in range(rng.randrange(40))))
            continue
        frame = bytearray(protocol.encode_frame(rng.randrange(256), rng.randrange(65536),
                                                rng.randbytes(rng.randrange(300))))
        if kind == 1:
            frame = frame[: rng.randrange(len(frame))]  # truncated
        elif kind == 2:
            frame[rng.randrange(len(frame))] ^= 1 << rng.randrange(8)  # one bit flipped
        parts.append(bytes(frame))
    return b"".join(parts)


def test_c_parser_agrees_with_python_decoder_on_damaged_streams() -> None:
    """Differential test: garbage, truncation and bit flips give the same events in C and Python."""
    rng = random.Random(3)
    for _ in range(300):
        stream = _random_stream(rng)
        want = []
        for ev in protocol.Decoder().feed(stream):
            if isinstance(ev, protocol.Frame):
                want.append(("frame", ev.type, ev.seq, ev.payload))
            else:
                want.append(("crc_error", ev.type, ev.seq, b""))
        assert core.parse_stream(stream) == want


# ---------------------------------------------------------------- preprocessing
def _golden_cases() -> list[tuple[dict, dict]]:
    return [(img, exp) for img in GOLDEN["images"] for exp in img["expect"]]


@pytest.mark.parametrize("img,exp", _golden_cases(), ids=lambda v: v.get("name", v.get("color")))
def test_golden_vectors_bit_exact(img: dict, exp: dict) -> None:
    scale, zp = GOLDEN["quants"][exp["quant"]]
    pixels = base64.b64decode(img["pixels"])
    got = core.preprocess_raw(pixels, img["fmt"], img["width"], img["height"], exp["color"], scale, zp)
    want = np.frombuffer(base64.b64decode(exp["i8"]), dtype=np.int8)
    assert got.shape == (GOLDEN["height"], GOLDEN["width"], 1 if exp["color"] == "gray" else 3)
    assert got.tobytes() == want.tobytes(), f"{img['name']} {exp['color']}: C and Python differ"


def test_golden_file_is_small_and_covers_the_contract() -> None:
    assert (REPO / "tests" / "golden" / "preprocess.json").stat().st_size < 300_000
    fmts = {img["fmt"] for img in GOLDEN["images"]}
    sides = {max(img["width"], img["height"]) for img in GOLDEN["images"]}
    assert fmts == {"GRAY8", "RGB888", "RGB565"} and 1 in sides and 128 in sides
    assert {e["color"] for _, e in _golden_cases()} == {"gray", "rgb"}


def test_quant_lut_matches_python_for_golden_and_random_params() -> None:
    for (scale, zp), lut in zip(GOLDEN["quants"], GOLDEN["luts"], strict=True):
        assert core.quant_lut(scale, zp).tobytes() == base64.b64decode(lut)
    rng = np.random.default_rng(4)
    for _ in range(300):
        scale = float(np.float32(rng.uniform(1e-4, 0.05)))
        zp = int(rng.integers(-128, 128))
        assert np.array_equal(core.quant_lut(scale, zp), pp.quant_lut(pp.Quant(scale, zp)))


def test_preprocess_raw_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        core.preprocess_raw(b"\x00" * 3, "GRAY8", 2, 2, "gray", 1 / 255, -128)  # 3 != 4 bytes
    with pytest.raises(ValueError):
        core.preprocess_raw(b"\x00" * 129, "GRAY8", 129, 1, "gray", 1 / 255, -128)
    with pytest.raises(ValueError):
        core.prepare_raw(b"\x00", "YUV", 1, 1, "gray")
    with pytest.raises(ValueError):
        core.prepare_raw(b"\x00", 0, 1, 1, "bgr")


def test_stats_median_max_min_mean() -> None:
    assert core.stats([5, 1, 4, 2, 3]) == (3, 5, 1, 3)
    assert core.stats([10, 40, 20, 30]) == (25, 40, 10, 25)
    assert core.stats([]) == (0, 0, 0, 0)


# ------------------------------------------------------------------------ ops
def test_ops_def_parsed_identically_by_python_and_the_c_preprocessor(tmp_path: Path) -> None:
    src = tmp_path / "ops.c"
    src.write_text('#include <stdio.h>\nint main(void){\n#define DR_OP(m, n) puts(#m " " #n);\n'
                   '#include "dr_ops.def"\nreturn 0;}\n')
    exe = tmp_path / "ops"
    subprocess.run(["cc", "-std=c99", "-Wall", "-Werror", f"-I{CORE}", str(src), "-o", str(exe)], check=True)
    from_c = [tuple(line.split()) for line in subprocess.check_output([str(exe)], text=True).splitlines()]
    assert from_c == list(ops.read_ops_def())
    needed = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MEAN", "ADD", "MUL", "LOGISTIC",
              "HARD_SWISH", "SOFTMAX", "RESHAPE", "AVERAGE_POOL_2D", "MAX_POOL_2D"}
    assert needed <= set(ops.FIRMWARE_OPS)


def test_check_ops_names_the_op_and_the_file() -> None:
    ops.check_ops(["CONV_2D", "SOFTMAX"], "m.tflite")
    with pytest.raises(ValueError, match=r"m\.tflite.*TANH"):
        ops.check_ops(["CONV_2D", "TANH"], "m.tflite")


def test_ops_def_errors_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.def"
    bad.write_text("/* c */\nDR_OP(AddAdd, ADD)\nDR_OP(AddAdd ADD)\n")
    with pytest.raises(ValueError, match=r"bad\.def:3"):
        ops.read_ops_def(bad)
    with pytest.raises(FileNotFoundError):
        ops.read_ops_def(tmp_path / "missing.def")


# --------------------------------------------------------------- the device
META = core.ModelMeta("v4", "ab" * 32, 10, "GRAY", (32, 20, 1), 1 / 255, -128, 1 / 256, -128)


class Host:
    """Collects and decodes the device's replies with the Python codec."""

    def __init__(self) -> None:
        self.dec = protocol.Decoder()
        self.frames: list[protocol.Frame] = []

    def write(self, data: bytes) -> None:
        self.frames += [f for f in self.dec.feed(data) if isinstance(f, protocol.Frame)]

    def pop(self) -> protocol.Frame:
        assert len(self.frames) == 1, self.frames
        return self.frames.pop()


def _device(invoke=None, clock=None) -> tuple[core.CoreDevice, Host]:
    host = Host()
    scores = np.array([0, 1, 2, 3, 4, 5, 6, 90, 8, 9], dtype=np.int8)
    dev = core.CoreDevice(META, invoke=invoke or (lambda x: scores), write=host.write, clock_us=clock,
                          boot_id=7, max_runs=1000, board="test", cpu_mhz=240)
    return dev, host


def test_core_device_hello_infer_and_boot() -> None:
    dev, host = _device()
    dev.boot()
    boot = host.pop()
    assert (boot.type, boot.seq) == (protocol.MsgType.BOOT, 0)
    dev.feed(protocol.encode_frame(protocol.MsgType.HELLO, 5))
    info = protocol.unpack_info(host.pop().payload)
    assert info["proto"] == 1 and info["boot_id"] == 7 and info["model_sha256"] == "ab" * 32
    assert info["ready"] is True and info["board"] == "test" and info["cpu_mhz"] == 240
    assert info == {**dev.info(), "uptime_ms": info["uptime_ms"], "rx_frames": info["rx_frames"]}
    dev.feed(protocol.encode_frame(protocol.MsgType.INFER_TENSOR, 6, bytes(640)))
    reply = host.pop()
    res = protocol.unpack_result(reply.payload)
    assert reply.seq == 6 and res.cls == 7 and res.scores[7] == 90 and res.preprocess_us == 0


def test_core_device_raw_uses_the_c_preprocessing() -> None:
    seen = []
    dev, host = _device(invoke=lambda x: seen.append(x) or np.zeros(10, np.int8))
    img = np.random.default_rng(5).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    raw = protocol.pack_raw(protocol.RawFormat.RGB888, 30, 40, img.tobytes())
    dev.feed(protocol.encode_frame(protocol.MsgType.INFER_RAW, 9, raw))
    assert host.pop().type == protocol.MsgType.RESULT
    want = pp.to_int8(pp.prepare(img, "gray"), pp.Quant(1 / 255, -128))
    assert np.array_equal(seen[0], want)


def test_core_device_errors_and_not_ready() -> None:
    def boom(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("kernel exploded")

    dev, host = _device(invoke=boom)
    dev.feed(protocol.encode_frame(protocol.MsgType.INFER_TENSOR, 1, bytes(640)))
    err = protocol.unpack_error(host.pop().payload)
    assert err.code == protocol.ErrorCode.INVOKE_FAILED and isinstance(dev.last_exception, RuntimeError)
    dev.set_ready(False, "arena too small")
    dev.feed(protocol.encode_frame(protocol.MsgType.INFER_TENSOR, 2, bytes(640)))
    err = protocol.unpack_error(host.pop().payload)
    assert err.code == protocol.ErrorCode.NOT_READY and "arena too small" in err.message
    assert dev.info()["ready"] is False and dev.info()["error"] == "arena too small"
    frame = bytearray(protocol.encode_frame(protocol.MsgType.HELLO, 3, b"x"))
    frame[8] ^= 0xFF
    dev.feed(bytes(frame))
    reply = host.pop()
    assert reply.seq == 3 and protocol.unpack_error(reply.payload).code == protocol.ErrorCode.CRC


def test_core_device_timed_run_uses_the_device_clock() -> None:
    t = [0]

    def clock() -> int:
        return t[0]

    def invoke(x: np.ndarray) -> np.ndarray:
        t[0] += 100 + len(calls) % 3  # 100, 101, 102 us per run
        calls.append(x)
        return np.zeros(10, np.int8)

    calls: list[np.ndarray] = []
    dev, host = _device(invoke=invoke, clock=clock)
    dev.feed(protocol.encode_frame(protocol.MsgType.TIMED_RUN, 4, protocol.pack_timed_run(2, 6)))
    timing = protocol.unpack_timing(host.pop().payload)
    assert len(calls) == 8 and not any(c.any() for c in calls)  # zeros before any INFER
    assert (timing.runs, timing.min_us, timing.max_us, timing.median_us) == (6, 100, 102, 101)
    dev.feed(protocol.encode_frame(protocol.MsgType.TIMED_RUN, 5, protocol.pack_timed_run(0, 1001)))
    assert protocol.unpack_error(host.pop().payload).code == protocol.ErrorCode.BAD_LENGTH


# ------------------------------------------------------------------------ fuzz
def test_bounded_fuzz_run_of_parser_and_dispatcher() -> None:
    proc = make("fuzz", timeout=FUZZ_SECONDS + 120, FUZZ_SECONDS=str(FUZZ_SECONDS))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Done " in out or "no crash" in out, out[-2000:]


# ------------------------------------------------------------------ PlatformIO
def _pio() -> str | None:
    venv_pio = REPO / ".venv" / "bin" / "pio"
    return str(venv_pio) if venv_pio.exists() else shutil.which("pio")


@pytest.mark.skipif(_pio() is None, reason="platformio not installed")
def test_pio_project_config_accepts_platformio_ini(tmp_path: Path) -> None:
    env = dict(os.environ, PLATFORMIO_CORE_DIR=str(tmp_path / "pio"), PLATFORMIO_NO_ANSI="true")
    proc = subprocess.run([_pio(), "project", "config", "--json-output"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = {name: dict(items) for name, items in json.loads(proc.stdout)}
    for env_name in ("esp32cam", "esp32-s3-devkitc-1"):
        opts = sections[f"env:{env_name}"]
        assert opts["framework"] == ["espidf"]
        assert opts["platform"].replace(" ", "").startswith("espressif32@6.")  # pinned exactly
        assert opts["board_build.f_cpu"] == "240000000L"
        assert str(opts["monitor_speed"]) == "921600"


def test_firmware_glue_reads_the_model_header_contract() -> None:
    """The ESP-IDF glue uses exactly the macros docs/architecture.md promises in model_data.h."""
    glue = "".join(p.read_text() for p in (REPO / "firmware" / "main").glob("*.cc"))
    for macro in ("DR_MODEL_NAME", "DR_MODEL_SHA256", "DR_MODEL_CLASSES", "DR_MODEL_COLOR",
                  "DR_MODEL_INPUT_H", "DR_MODEL_INPUT_W", "DR_MODEL_INPUT_C", "DR_MODEL_IN_SCALE",
                  "DR_MODEL_IN_ZP", "DR_MODEL_OUT_SCALE", "DR_MODEL_OUT_ZP", "DR_MODEL_ARENA_BYTES",
                  "dr_model_data"):
        assert macro in glue, macro
    assert '#include "dr_ops.def"' in glue  # the resolver is built from the single op list


def test_one_default_model_for_make_firmware_and_workflow() -> None:
    """`make bench`, a bare `pio run` and the GitHub workflow all default to the same shipped model."""
    import re

    make = re.search(r"^MODEL\s*\?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    cmake = re.search(r'set\(DR_DEFAULT_MODEL "([^"]+)"\)', (REPO / "firmware/main/CMakeLists.txt").read_text())
    workflow = (REPO / ".github/workflows/firmware.yml").read_text()
    assert make and cmake
    model = make.group(1)
    assert cmake.group(1) == model
    assert f"default: \"{model}\"" in workflow and f"'{model}' }}}}" in workflow
    assert (REPO / "exported_models" / model / "model_data.cc").is_file()
