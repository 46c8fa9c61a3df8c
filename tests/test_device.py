"""Device benchmark against the virtual device over real pseudo-terminals.

A tiny int8 model is trained and converted here (tf_keras, full-integer), so nothing
depends on shipped models. Images: a slice of the shared dataset (symlinks, never
copies) when it is present, else a synthetic haverland-layout folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import tty
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from digitrec import cli, compare, device
from digitrec import protocol as P

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DIGITREC_DATA", REPO.parent / "shared" / "datasets" / "haverland"))
SLICE = 160  # images: enough to see faults and pacing, small enough for 2 shared cores

BUILD_MODELS = r'''
import hashlib, json, sys
from pathlib import Path
import numpy as np
import tensorflow as tf
import tf_keras as keras
from digitrec.bench import tflm_arena_bytes
from digitrec.data import load_dataset
from digitrec.preprocess import to_float

out, root = Path(sys.argv[1]), sys.argv[2]
ds = load_dataset(root, progress=False)
for color in ("gray", "rgb"):
    x, y, _ = ds.arrays(ds.usable, color, 10)
    xf = to_float(x)
    keras.utils.set_random_seed(1)
    m = keras.Sequential([
        keras.layers.Input(x.shape[1:]),
        keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
        keras.layers.Softmax(),
    ])
    m.compile("adam", "sparse_categorical_crossentropy")
    m.fit(xf, y, epochs=6, batch_size=32, verbose=0)
    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([xf[i:i + 1]] for i in range(min(100, len(xf))))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    data = conv.convert()
    it = tf.lite.Interpreter(model_content=data)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    d = out / f"tiny_{color}"
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(data)
    card = {"name": f"tiny_{color}", "family": "test", "classes": 10, "color": color.upper(),
            "input": {"shape": list(x.shape[1:]), "dtype": "int8", "scale": float(i["quantization"][0]),
                      "zero_point": int(i["quantization"][1])},
            "output": {"shape": [10], "dtype": "int8", "scale": float(o["quantization"][0]),
                       "zero_point": int(o["quantization"][1])},
            "sha256": hashlib.sha256(data).hexdigest(), "tflite_bytes": len(data),
            "arena_bytes": tflm_arena_bytes(data)}
    (d / "card.json").write_text(json.dumps(card, indent=1))
'''


# ================================================================ fixtures

def _synthetic(root: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for k in range(n):
        w, h = (24, 40) if k % 10 else (140, 60)  # some crops above MAX_RAW_SIDE: tensor fallback
        coarse = rng.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3))
        img = np.kron(coarse, np.ones((4, 4, 1)))[:h, :w].astype(np.uint8)
        path = root / "images" / f"meter{k % 4}" / f"{(k * 7 % 100) / 10:.1f}_img{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)


def _real_slice(root: Path, n: int) -> None:
    src = REAL_DATA / "images"
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in {".jpg", ".png", ".bmp"})
    for p in files[:: max(1, len(files) // n)][:n]:
        dst = root / "images" / p.relative_to(src)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(p)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("device")
    data = base / "data"
    if (REAL_DATA / "images").is_dir():
        _real_slice(data, SLICE)
    else:
        _synthetic(data, SLICE)
    script = base / "build_models.py"
    script.write_text(BUILD_MODELS)
    env_vars = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                    DIGITREC_CACHE=str(base / "cache"))
    subprocess.run([sys.executable, str(script), str(base / "models"), str(data)], check=True, env=env_vars,
                   capture_output=True)
    return {"base": base, "data": data, "gray": base / "models" / "tiny_gray", "rgb": base / "models" / "tiny_rgb"}


@contextlib.contextmanager
def data_cache(env: dict[str, Path]):
    """The data stage's cache in the session's tmp dir (never ~/.cache), for this module only."""
    saved = os.environ.get("DIGITREC_CACHE")
    os.environ["DIGITREC_CACHE"] = str(env["base"] / "cache")  # subprocesses inherit it
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("DIGITREC_CACHE", None)
        else:
            os.environ["DIGITREC_CACHE"] = saved


@pytest.fixture(autouse=True)
def _cache(env: dict[str, Path]):
    with data_cache(env):
        yield


def bench(env: dict[str, Path], name: str, *extra: str, model: str = "gray", port: str = "virtual",
          baud: str = "0") -> tuple[int, dict, list[dict]]:
    out, js = env["base"] / f"{name}.jsonl", env["base"] / f"{name}.json"
    with data_cache(env):
        rc = cli.main(["device", "bench", "--port", port, "--model", str(env[model]), "--data", str(env["data"]),
                       "--split", "all", "--baud", baud, "--out", str(out), "--json", str(js), "--quiet", *extra])
    summary = json.loads(js.read_text()) if js.exists() and rc == 0 else {}
    return rc, summary, device.read_results(out)[1]


@pytest.fixture(scope="session")
def clean(env: dict[str, Path]) -> tuple[dict, list[dict]]:
    rc, summary, rows = bench(env, "clean_tensor")
    assert rc == 0
    return summary, rows


def by_path(rows: list[dict]) -> dict[str, dict]:
    return {r["path"]: r for r in rows}


# ================================================================ the virtual device, both modes

def test_tensor_mode_agrees_with_pc(clean: tuple[dict, list[dict]]) -> None:
    summary, rows = clean
    assert summary["images"] == len(rows) >= SLICE * 0.9
    assert summary["agreement"] >= 0.999 and summary["scores_identical"] >= 0.999
    # the virtual device runs the PC's TFLM behind the firmware core: every byte must survive the link
    assert summary["agreement_tflm"] == summary["scores_identical_tflm"] == 1.0
    assert all(r["scores"] == r["tflm_scores"] for r in rows)
    assert summary["chip"] == "virtual" and summary["timings_source"] == "host (virtual device)"
    assert summary["timed_run_us_median"] > 0 and summary["device_infer_us_median"] > 0
    assert summary["retries"] == summary["resets"] == 0
    assert max(Counter(r["path"] for r in rows).values()) == 1
    for key in ("images", "mode", "board", "model_sha256", "device_accuracy", "host_accuracy", "agreement",
                "device_infer_us_median", "device_preprocess_us_median", "timed_run_us_median",
                "link_bytes_per_s", "link_utilization", "retries", "resets", "timings_source"):
        assert key in summary


@pytest.fixture(scope="session")
def raw_gray(env: dict[str, Path]) -> tuple[dict, list[dict]]:
    rc, summary, rows = bench(env, "raw_gray", "--mode", "raw")
    assert rc == 0
    return summary, rows


def test_printed_summary_lines_up(clean: tuple[dict, list[dict]], capsys: pytest.CaptureFixture) -> None:
    device.print_summary(clean[0])
    lines = capsys.readouterr().out.splitlines()
    starts = {len(line) - len(line.split("  ", 1)[1].lstrip()) for line in lines}  # column of each value
    assert len(lines) >= 10 and len(starts) == 1, lines


def test_raw_mode_equals_tensor_mode(raw_gray: tuple[dict, list[dict]], clean: tuple[dict, list[dict]]) -> None:
    summary, rows = raw_gray
    tensor = by_path(clean[1])
    assert by_path(rows).keys() == tensor.keys()
    for r in rows:  # the C preprocessing of the raw crop gives the same int8 input as the PC's
        assert (r["device_class"], r["scores"]) == (tensor[r["path"]]["device_class"], tensor[r["path"]]["scores"])
    raw = [r for r in rows if r["sent"].startswith("raw")]
    assert len(raw) >= 0.8 * len(rows) and all(r["preprocess_us"] > 0 for r in raw)
    assert summary["agreement"] >= 0.999 and summary["device_preprocess_us_median"] > 0


def test_rgb_model_raw_and_compare_report(env: dict[str, Path], clean: tuple[dict, list[dict]],
                                          raw_gray: tuple[dict, list[dict]], capsys: pytest.CaptureFixture) -> None:
    rc, summary, _ = bench(env, "raw_rgb", "--mode", "raw", model="rgb")
    assert rc == 0 and summary["agreement"] >= 0.999 and summary["color"] == "RGB"
    report = env["base"] / "report"
    files = [env["base"] / f"{n}.jsonl" for n in ("clean_tensor", "raw_gray", "raw_rgb")]
    pc = env["base"] / "pc_bench.json"  # the shape of `digitrec bench --json`: a list of rows
    cut = int(sorted(max(r["scores"]) for r in clean[1])[len(clean[1]) // 2])  # a threshold that splits them
    pc.write_text(json.dumps([{"model": "10cls_GRAY/tiny_gray", "sha256": clean[0]["model_sha256"], "accuracy": 0.5, "images": 99, "split": "test",
        "pc_inf_per_s": 20000.0, "confidence_target": 0.995, "confidence_threshold_int8": cut}]))
    capsys.readouterr()
    assert cli.main(["compare", *map(str, files), "--bench", str(pc), "--report", str(report)]) == 0
    printed = capsys.readouterr().out.splitlines()
    for label in compare.TABLE_COLS:  # the terminal table: every label apart from its first value
        assert any(line.startswith(label + "  ") for line in printed), label
    doc = json.loads((report / "compare.json").read_text())
    assert set(doc["preprocess_cost"]) == {"GRAY", "RGB"}
    (pair,) = doc["raw_vs_tensor"]  # tiny_gray: raw run vs tensor run
    assert pair["same_scores"] == pair["images"] == len(clean[1]) and pair["sent_raw"] > 0
    assert all(r["timings_source"] == "host (virtual device)" for r in doc["runs"])
    conf = next(r["confidence"] for r in doc["runs"] if r["mode"] == "tensor")  # the PC's cut on the device's scores
    kept = [r for r in clean[1] if max(r["scores"]) >= cut]
    assert conf["threshold_int8"] == cut and conf["images"] == len(clean[1]) and 0 < len(kept) < len(clean[1])
    assert conf["answered"] == pytest.approx(len(kept) / len(clean[1]))
    assert conf["accuracy_answered"] == pytest.approx(sum(r["device_class"] == r["label"] for r in kept) / len(kept))
    assert conf["pc_answered"] == pytest.approx(conf["answered"], abs=0.02)  # scores identical or 1 LSB apart
    assert next(r["confidence"] for r in doc["runs"] if r["color"] == "RGB") is None  # no PC row for that model
    md = (report / "compare.md").read_text()
    assert "virtual device" in md and "RGB / GRAY preprocessing cost" in md
    assert f"answer when the top int8 score is at least {cut}" in md
    assert "tiny_gray (clean_tensor.jsonl, tensor mode): PC accuracy 50.00 % on 99 images of split test; 50 us per inference [PC]" in md
    assert (report / "latency.png").stat().st_size > 0 and (report / "disagreements.png").stat().st_size > 0


def test_paced_link_reaches_line_rate(env: dict[str, Path]) -> None:
    # the whole slice (about 1.1 s on the wire), so a scheduler stall of a few tens of ms
    # on a loaded 2-core machine moves the figures by only a few per cent
    rc, summary, _ = bench(env, "paced", baud="921600")
    assert rc == 0
    assert summary["baud"] == 921600
    assert summary["link_payload_utilization"] >= 0.90, summary
    assert summary["link_utilization"] <= 1.02, summary  # the virtual UART really is paced


# ================================================================ fault injection

class FaultProxy:
    """host <-> (pty pair) <-> proxy <-> device pty, dropping bytes and flipping bits.

    One fault every `gap` bytes on average per direction (uniform in gap/2..3*gap/2, drop
    or flip at random): seeded, so a run sees the same kind of damage every time.
    """

    def __init__(self, device_port: str, seed: int, gaps: dict[str, int]) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.dev = os.open(device_port, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.dev)
        self.rng = {way: random.Random(f"{seed}{way}") for way in gaps}
        self.gaps = gaps
        self.next = {way: self._gap(way) for way in gaps}
        self.stats: Counter = Counter()
        self.triggers: list[list] = []  # [h2d byte count, action]: fired in step with the data
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def after_h2d(self, nbytes: int, action: Callable[[], object]) -> None:
        """Run `action` once `nbytes` more host->device bytes have passed (not a wall-clock guess)."""
        self.triggers.append([self.stats["h2d_bytes"] + nbytes, action])

    def _fire(self) -> None:
        for t in [t for t in self.triggers if self.stats["h2d_bytes"] >= t[0]]:
            self.triggers.remove(t)
            t[1]()

    def _gap(self, way: str) -> int:
        return self.rng[way].randint(self.gaps[way] // 2, 3 * self.gaps[way] // 2)

    def _mangle(self, data: bytes, way: str) -> bytes:
        out = bytearray()
        for b in data:
            self.next[way] -= 1
            if self.next[way] > 0:
                out.append(b)
                continue
            self.next[way] = self._gap(way)
            if self.rng[way].random() < 0.5:
                self.stats[f"{way}_dropped"] += 1
                continue
            self.stats[f"{way}_flipped"] += 1
            out.append(b ^ (1 << self.rng[way].randrange(8)))
        return bytes(out)

    def _run(self) -> None:
        peer = {self.master: (self.dev, "h2d"), self.dev: (self.master, "d2h")}
        while not self._stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    return
                to, way = peer[fd]
                self.stats[f"{way}_bytes"] += len(data)
                os.write(to, self._mangle(data, way))
                self._fire()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        for fd in (self.master, self.slave, self.dev):
            os.close(fd)


def _rows_in(path: Path) -> int:
    return len(device.read_results(path)[1]) if path.exists() else 0


def _bench_process(env: dict[str, Path], port: str, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "digitrec.cli", "device", "bench", "--port", port, "--model", str(env["gray"]),
           "--data", str(env["data"]), "--split", "all", "--out", str(out), "--json", str(out.with_suffix(".json")),
           "--timeout", "0.3", "--quiet", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _wait_rows(out: Path, n: int, proc: subprocess.Popen, limit: float = 60) -> None:
    t0 = time.monotonic()
    while _rows_in(out) < n:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "bench exited"
        assert time.monotonic() - t0 < limit, "bench made no progress"
        time.sleep(0.005)


def test_faults_reset_and_killed_host_then_resume(env: dict[str, Path], clean: tuple[dict, list[dict]]) -> None:
    virt = device.VirtualProcess(env["gray"], 921600)
    proxy = FaultProxy(virt.port, seed=7, gaps={"h2d": 3000, "d2h": 1200})
    out = env["base"] / "faulty.jsonl"
    frame = 32 * 20 + P.OVERHEAD
    try:
        first = _bench_process(env, proxy.path, out)
        proxy.after_h2d(40 * frame, first.kill)  # SIGKILL mid-run: no cleanup at all
        first.wait(120)
        killed_at = _rows_in(out)
        assert 0 < killed_at < len(clean[1])
        second = _bench_process(env, proxy.path, out, "--resume")
        proxy.after_h2d(30 * frame, lambda: virt.proc.send_signal(signal.SIGUSR1))  # the board resets
        assert second.wait(120) == 0, second.stderr.read() if second.stderr else ""
    finally:
        proxy.close()
        virt.stop()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert min(proxy.stats[f"{w}_{f}"] for w in ("h2d", "d2h") for f in ("dropped", "flipped")) >= 1, proxy.stats
    assert summary["resets"] >= 1 and summary["retries"] >= 1
    rows = device.read_results(out)[1]
    counts = Counter(r["path"] for r in rows)
    assert max(counts.values()) == 1  # each image answered exactly once
    ref = by_path(clean[1])
    assert counts.keys() == ref.keys()  # complete
    for r in rows:  # equal to the clean run
        assert (r["device_class"], r["scores"], r["pc_class"]) == (
            ref[r["path"]]["device_class"], ref[r["path"]]["scores"], ref[r["path"]]["pc_class"])
    assert summary["images"] == len(ref) and summary["agreement"] >= 0.999


def test_sigterm_stops_with_answers_saved_and_the_virtual_device_gone(env: dict[str, Path]) -> None:
    """`kill` on a bench with `--port virtual` stops it like Ctrl-C: exit 130, answers kept, and
    the virtual device it started (its own session, so the signal does not reach it) stopped."""
    out = env["base"] / "sigterm.jsonl"
    proc = _bench_process(env, "virtual", out, "--baud", "115200")
    _wait_rows(out, 3, proc)
    proc.terminate()
    assert proc.wait(60) == 130
    assert 3 <= _rows_in(out)
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", f"digitrec.virtual --model {env['gray']}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""


def test_dead_port_stops_with_answers_saved(env: dict[str, Path]) -> None:
    virt = device.VirtualProcess(env["gray"], 115200)  # ~60 ms per image: the run outlasts the test's wait
    out = env["base"] / "dead.jsonl"
    proc = _bench_process(env, virt.port, out)
    try:
        _wait_rows(out, 20, proc)
        virt.proc.kill()  # the board is unplugged
        assert proc.wait(30) == 3
        assert "--resume" in (proc.stderr.read() if proc.stderr else "")
    finally:
        virt.stop()
        if proc.poll() is None:
            proc.kill()
    assert 20 <= _rows_in(out) < SLICE


def test_slow_host_preparation_is_not_device_silence(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The PC reference for a whole split can take the host longer than the silence limit after
    HELLO; only silence once requests are out may say the board is gone."""

    class Clock:  # the device module's clock, jumped a minute ahead while the host prepares
        offset = 0.0

        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        def monotonic(self) -> float:
            return time.monotonic() + self.offset

    clock, build, poll = Clock(), device.build_work, device.Link.poll
    first_answer_pending = []

    def slow_build(*args: object, **kwargs: object) -> list:
        clock.offset += 60.0
        first_answer_pending.append(True)
        return build(*args, **kwargs)

    def chip_poll(link: device.Link) -> list:
        if first_answer_pending:  # a real chip is still computing when the host first looks
            first_answer_pending.clear()
            return []
        return poll(link)

    monkeypatch.setattr(device, "time", clock)
    monkeypatch.setattr(device, "build_work", slow_build)
    monkeypatch.setattr(device.Link, "poll", chip_poll)
    rc, _, rows = bench(env, "slow_prep", "--limit", "10")
    assert rc == 0 and len(rows) == 10


# ================================================================ CLI errors

def test_no_such_port(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    rc, _, _ = bench(env, "noport", port="/dev/ttyDIGITREC_NOPE")
    assert rc == 2
    err = capsys.readouterr().err
    assert "cannot open serial port /dev/ttyDIGITREC_NOPE: no such port" in err and "Traceback" not in err


def test_wrong_model_on_board(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    other = env["base"] / "other_model"
    shutil.copytree(env["gray"], other, dirs_exist_ok=True)
    (other / "model.tflite").write_bytes((env["gray"] / "model.tflite").read_bytes() + b"\0")
    virt = device.VirtualProcess(env["gray"], 0)
    try:
        rc = cli.main(["device", "bench", "--port", virt.port, "--model", str(other), "--data", str(env["data"]),
                       "--split", "all", "--out", str(env["base"] / "wrong.jsonl"), "--quiet"])
    finally:
        virt.stop()
    assert rc == 2
    assert "wrong model on the board: it runs 'tiny_gray'" in capsys.readouterr().err


class FakeDevice:
    """Answers HELLO with an INFO of another protocol version."""

    def __init__(self, proto: int) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.proto = proto
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        dec = P.Decoder()
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.05)[0]:
                continue
            for ev in dec.feed(os.read(self.master, 4096)):
                if isinstance(ev, P.Frame) and ev.type == P.MsgType.HELLO:
                    info = {"proto": self.proto, "chip": "ESP32", "board": "esp32cam", "model": "x",
                            "model_sha256": "0" * 64, "ready": True, "boot_id": 1}
                    os.write(self.master, P.encode_frame(P.MsgType.INFO, ev.seq, P.pack_info(info)))

    def close(self) -> None:
        self._stop.set()
        self.thread.join(2)
        os.close(self.master)
        os.close(self.slave)


def test_protocol_version_mismatch(env: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    fake = FakeDevice(proto=P.PROTO_VERSION + 1)
    try:
        rc, _, _ = bench(env, "proto", port=fake.path, baud="921600")
    finally:
        fake.close()
    assert rc == 2
    assert f"protocol version mismatch: the device speaks protocol {P.PROTO_VERSION + 1}" in capsys.readouterr().err


def test_silent_port_is_a_clear_error() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        link = device.open_port(os.ttyname(slave), 921600)
        os.write(master, b"rst:0x1 (POWERON_RESET) some boot log at another baud rate\r\n")
        with pytest.raises(device.DeviceError, match="no answer to HELLO .* non-frame data"):
            device.hello(link, tries=1, wait_s=0.2)
        link.close()
    finally:
        os.close(master)
        os.close(slave)


# ================================================================ list, flash, virtual CLI

def test_limit_spreads_over_the_whole_split() -> None:
    idx = list(range(100, 1100))
    picked = device.spread(idx, 10)
    assert len(picked) == 10 and picked[0] == 100 and picked[-1] == 1099  # first to last, not the first 10
    assert all(90 <= d <= 112 for d in np.diff(picked))
    assert device.spread(idx, 0) == device.spread(idx, None) == device.spread(idx, 5000) == idx
    assert len(set(device.spread(idx, 999))) == 999


def test_known_bridges_are_marked() -> None:
    assert "CP210x" in device.bridge_name(0x10C4, 0xEA60)
    assert "CH340" in device.bridge_name(0x1A86, 0x7523)
    assert "FTDI" in device.bridge_name(0x0403, 0x6001)
    assert "USB-Serial-JTAG" in device.bridge_name(0x303A, 0x1001)
    assert device.bridge_name(0x1234, 0x5678) == "" and device.bridge_name(None, None) == ""
    assert cli.main(["device", "list"]) == 0


def test_flash_without_platformio_project(env: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc = cli.main(["device", "flash", "--env", "esp32cam", "--model", str(env["gray"]), "--port", "/dev/null",
                   "--project", str(tmp_path)])
    assert rc == 2 and "no platformio.ini" in capsys.readouterr().err


def test_virtual_cli_serves_hello(env: dict[str, Path]) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "digitrec.cli", "device", "virtual", "--model", str(env["rgb"])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = proc.stdout.readline().strip() if proc.stdout else ""
        link = device.open_port(port, 921600)
        info = device.hello(link)
        link.close()
    finally:
        proc.terminate()
        proc.wait(5)
    assert info["chip"] == "virtual" and info["timings"] == "host" and info["proto"] == P.PROTO_VERSION
    assert info["model"] == "tiny_rgb" and info["input"] == [32, 20, 3] and info["ready"] is True


def _fake_pio(tmp_path: Path, rc: int) -> Path:
    """A `pio` that records its arguments and DIGITREC_MODEL instead of building."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    pio = bindir / "pio"
    pio.write_text(f'#!/bin/sh\necho "$DIGITREC_MODEL $*" > "{tmp_path}/pio_call"\nexit {rc}\n')
    pio.chmod(0o755)
    (tmp_path / "platformio.ini").write_text("[platformio]\n")
    return bindir


def test_flash_runs_pio_then_checks_the_model(env: dict[str, Path], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", f"{_fake_pio(tmp_path, 0)}:{os.environ['PATH']}")
    virt = device.VirtualProcess(env["gray"], 0)  # stands in for the freshly flashed board
    try:
        rc = cli.main(["device", "flash", "--env", "esp32cam", "--model", str(env["gray"]), "--port", virt.port,
                       "--project", str(tmp_path), "--settle", "0"])
        wrong = cli.main(["device", "flash", "--env", "esp32cam", "--model", str(env["rgb"]), "--port", virt.port,
                          "--project", str(tmp_path), "--settle", "0"])
    finally:
        virt.stop()
    call = (tmp_path / "pio_call").read_text()
    assert f"{env['rgb'].resolve()} run -e esp32cam -t upload --upload-port {virt.port}" in call
    out = capsys.readouterr()
    assert rc == 0 and f"ok: {virt.port} runs tiny_gray" in out.out
    assert wrong == 2 and "wrong model on the board" in out.err


def test_flash_reports_a_failed_build(env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("PATH", f"{_fake_pio(tmp_path, 1)}:{os.environ['PATH']}")
    rc = cli.main(["device", "flash", "--env", "esp32cam", "--model", str(env["gray"]), "--port", "/dev/null",
                   "--project", str(tmp_path), "--settle", "0"])
    assert rc == 2 and "build or upload failed for env esp32cam" in capsys.readouterr().err
