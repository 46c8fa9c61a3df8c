"""The virtual device: the firmware's portable core behind a pseudo-terminal.

What runs is what the board runs, except the board glue: the C frame parser,
dispatcher and preprocessing of ``firmware/core/`` (through ``digitrec.core``), and
inference by the real TFLite Micro interpreter (PyPI ``tflite-micro``). INFO says
``"chip": "virtual"``; its microsecond timings come from the host clock and every
report labels them as host timings.

``--baud N`` paces both directions like an 8N1 UART (10 bits per byte): received
bytes become visible to the parser only when they would have arrived, replies leave
at the line rate. Without it the pty runs as fast as the host can copy.

Reset simulation (fault tests, experiments): SIGUSR1, or ``--reset-after N`` requests,
drops everything buffered, prints ROM-bootloader-like text, and comes back with a new
``boot_id`` and a BOOT frame, as a board does after a brown-out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import select
import signal
import sys
import threading
import time
import tty
from pathlib import Path
from typing import Any

import numpy as np

from digitrec import protocol as P

ARENA_MARGIN = 4096  # the pip TFLM wrapper allocates a little beyond the card's measured arena
CHUNK = 64  # bytes per paced chunk (0.7 ms at 921600 baud)
BOOT_TEXT = (
    b"ets Jul 29 2019 12:21:46\r\n\r\nrst:0xc (SW_CPU_RESET),boot:0x13 (SPI_FAST_FLASH_BOOT)\r\n"
    b"I (31) boot: ESP-IDF virtual 2nd stage bootloader\r\n"
)
BOOT_DELAY_S = 0.05
HOST_TIMINGS = '"timings": "host"'  # appended to INFO: these microseconds are the PC's


class ModelError(RuntimeError):
    """A model directory that cannot be served (missing files, bad card)."""


def load_model_dir(path: str | Path) -> tuple[bytes, dict[str, Any], Path]:
    """(tflite bytes, card dict, model dir) from a model dir or a .tflite beside card.json."""
    p = Path(path)
    tflite = p if p.suffix == ".tflite" else p / "model.tflite"
    if p.is_dir() and not tflite.exists():
        found = sorted(p.glob("*.tflite"))
        tflite = found[0] if len(found) == 1 else tflite
    card_path = tflite.parent / "card.json"
    if not tflite.is_file():
        raise ModelError(f"no model.tflite in {p}")
    if not card_path.is_file():
        raise ModelError(f"no card.json beside {tflite}")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{card_path} is not valid JSON: {exc}") from exc
    for key in ("name", "classes", "color", "input", "output"):
        if key not in card:
            raise ModelError(f"{card_path} lacks '{key}'")
    return tflite.read_bytes(), card, tflite.parent


class Pacer:
    """Time at which bytes finish crossing an 8N1 line, chunks queued back to back."""

    def __init__(self, baud: int) -> None:
        self.byte_s = P.BITS_PER_BYTE / baud
        self.free_at = 0.0

    def done_at(self, n: int, ready_at: float) -> float:
        self.free_at = max(ready_at, self.free_at) + n * self.byte_s
        return self.free_at


class TflmRunner:
    """int8 inference with the real TFLM interpreter (the same one the exporter measures)."""

    def __init__(self, model: bytes, card: dict[str, Any]) -> None:
        from tflite_micro.python.tflite_micro import runtime

        self.arena = int(card.get("arena_bytes") or 0)
        size = self.arena + ARENA_MARGIN if self.arena else None
        self.interp = runtime.Interpreter.from_bytes(model, arena_size=size)
        self.shape = tuple(int(v) for v in card["input"]["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.interp.set_input(np.asarray(x, dtype=np.int8).reshape((1, *self.shape)), 0)
        self.interp.invoke()
        return np.asarray(self.interp.get_output(0), dtype=np.int8).reshape(-1)


class VirtualDevice:
    """Serves the protocol on a file descriptor (the pty master) with the C core."""

    def __init__(self, model_path: str | Path, baud: int | None = None, reset_after: int = 0) -> None:
        self.model_bytes, self.card, self.model_dir = load_model_dir(model_path)
        self.sha256 = hashlib.sha256(self.model_bytes).hexdigest()
        if self.card.get("sha256") not in (None, self.sha256):
            print(f"warning: card.json sha256 differs from the .tflite in {self.model_dir}; INFO reports the "
                  "file's hash", file=sys.stderr)
        self.baud = baud or None
        self.reset_after = reset_after
        self.requests = 0
        self.resets = 0
        self._reset_flag = threading.Event()
        self._stop = threading.Event()
        self._rx: queue.Queue[bytes] = queue.Queue()
        self._tx: queue.Queue[tuple[float, bytes] | None] = queue.Queue()
        self._fd = -1
        self.runner: TflmRunner | None = None
        self.setup_error = ""
        try:
            self.runner = TflmRunner(self.model_bytes, self.card)
        except Exception as exc:  # the firmware reports this in INFO instead of crashing
            self.setup_error = f"TFLM setup failed: {exc}"
        self.core = self._new_core()

    # ------------------------------------------------------------ the "chip"
    def _new_core(self) -> Any:
        from digitrec import core

        card = dict(self.card, sha256=self.sha256)  # identity = the bytes actually served
        dev = core.CoreDevice(
            core.ModelMeta.from_card(card), invoke=self._invoke, write=self._write,
            chip="virtual", board="virtual", cpu_mhz=0, free_heap=0, extra_json=HOST_TIMINGS,
            arena_bytes=int(self.card.get("arena_bytes") or 0) + ARENA_MARGIN,
            arena_used=int(self.card.get("arena_bytes") or 0),
        )
        dev.set_ready(self.runner is not None, self.setup_error)
        return dev

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        self.requests += 1
        if self.runner is None:
            raise RuntimeError(self.setup_error)
        return self.runner(x)

    def _write(self, data: bytes) -> None:
        if self.baud:
            self._tx.put((time.monotonic(), data))
        else:
            _write_all(self._fd, data)

    def reset(self) -> None:
        """Simulated board reset: buffers lost, boot text, new boot_id, BOOT frame."""
        self.resets += 1
        _drain(self._rx)
        if self.baud:
            _drain(self._tx)
        time.sleep(BOOT_DELAY_S)
        _drain(self._rx)  # bytes that arrived while "booting" are lost too
        self._write(BOOT_TEXT)
        self.core = self._new_core()
        self.core.boot()

    # ------------------------------------------------------------ I/O threads
    def _reader(self) -> None:
        pacer = Pacer(self.baud) if self.baud else None
        last_empty = 0.0  # last time the pty was seen empty: later data arrived after it
        while not self._stop.is_set():
            # zero-timeout poll: "already waiting" must not depend on how long this thread
            # waited for the GIL behind an invoke
            waiting = bool(select.select([self._fd], [], [], 0)[0])
            if not waiting:
                last_empty = time.monotonic()
                if not select.select([self._fd], [], [], 0.1)[0]:
                    continue
            try:
                data = os.read(self._fd, 4096)
            except OSError:  # host side closed for good
                data = b""
            if not data:
                time.sleep(0.01)
                continue
            if pacer is None:
                self._rx.put(data)
                continue
            now = time.monotonic()
            # Bytes found waiting were written while this thread slept or waited: on a UART
            # they follow the previous chunk back to back unless the line was seen idle.
            ready = min(now, max(pacer.free_at, last_empty)) if waiting else now
            for i in range(0, len(data), CHUNK):
                piece = data[i:i + CHUNK]
                _sleep_until(pacer.done_at(len(piece), ready))
                self._rx.put(piece)

    def _writer(self) -> None:
        assert self.baud
        pacer = Pacer(self.baud)
        while True:
            item = self._tx.get()
            if item is None:
                return
            queued, data = item
            for i in range(0, len(data), CHUNK):
                piece = data[i:i + CHUNK]
                _sleep_until(pacer.done_at(len(piece), queued))
                _write_all(self._fd, piece)

    def serve(self, fd: int) -> None:
        """Run until stop(): feed received bytes to the C core, one request at a time."""
        self._fd = fd
        threads = [threading.Thread(target=self._reader, daemon=True)]
        if self.baud:
            threads.append(threading.Thread(target=self._writer, daemon=True))
        for t in threads:
            t.start()
        self.core.boot()
        try:
            while not self._stop.is_set():
                if self._reset_flag.is_set() or (self.reset_after and self.requests >= self.reset_after):
                    self._reset_flag.clear()
                    self.reset_after = 0
                    self.reset()
                try:
                    data = self._rx.get(timeout=0.05)
                except queue.Empty:
                    continue
                self.core.feed(data)
        finally:
            self._tx.put(None)

    def request_reset(self) -> None:
        self._reset_flag.set()

    def stop(self) -> None:
        self._stop.set()


def _sleep_until(t: float) -> None:
    dt = t - time.monotonic()
    if dt > 0:
        time.sleep(dt)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 0.1)
            continue
        view = view[n:]


def _drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return


def open_pty() -> tuple[int, int, str]:
    """(master fd, slave fd, slave path) of a raw pseudo-terminal.

    The slave stays open here too, so the master never sees EIO while no host is
    connected and a host can close and reopen the port, as with a real board.
    """
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave, os.ttyname(slave)


# ---------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model dir (model.tflite + card.json), .tflite file, or 10cls_GRAY/v4")
    p.add_argument("--baud", type=int, default=0, help="pace both directions like an 8N1 UART at N baud (0: unpaced)")
    p.add_argument("--reset-after", type=int, default=0, metavar="N",
                   help="simulate a board reset after N inferences (fault tests); SIGUSR1 resets at any time")


def run(args: argparse.Namespace) -> int:
    from digitrec.device import DeviceError, resolve_model

    try:
        dev = VirtualDevice(resolve_model(args.model), baud=args.baud, reset_after=args.reset_after)
    except (ModelError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    master, slave, path = open_pty()
    signal.signal(signal.SIGUSR1, lambda *_: dev.request_reset())
    signal.signal(signal.SIGTERM, lambda *_: dev.stop())
    # First stdout line: the port alone, so scripts (and `device bench --port virtual`) can read it.
    print(path, flush=True)
    pace = f"paced at {args.baud} baud" if args.baud else "unpaced"
    print(f"virtual device on {path}: model {dev.card['name']} (sha256 {dev.sha256[:12]}...), {pace}; "
          f"timings are host timings. Ctrl-C to stop.", file=sys.stderr, flush=True)
    if dev.setup_error:
        print(f"warning: {dev.setup_error}; every INFER is answered NOT_READY", file=sys.stderr, flush=True)
    try:
        dev.serve(master)
    except KeyboardInterrupt:
        pass
    finally:
        os.close(master)
        os.close(slave)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m digitrec.virtual", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
