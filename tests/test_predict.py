"""`digitrec predict` on real crops: readings, confidences, the bench's threshold, bad files."""

import csv
import hashlib
import json
import re
import shutil
from pathlib import Path

from digitrec import cli, labels

MODELS = Path(__file__).resolve().parents[1] / "exported_models"


def _real_crops(real_data: Path, dest: Path, n: int = 40) -> dict[str, float]:
    """Copy n labelled crops from across the dataset into dest; name -> label."""
    files = sorted((real_data / "images").rglob("*.jpg"))[::500][:n]
    out = {}
    for i, f in enumerate(files):
        name = f"{i:02d}_{f.name}"
        shutil.copy(f, dest / name)
        out[name] = labels.parse_label(f.name)
    return out


def _predict_on_board(crops: Path, out: Path, board, baud: str) -> int:
    """`digitrec predict --port` with the 10-class v4 on an already started (virtual) board."""
    try:
        return cli.main(["predict", str(crops), "--model", str(MODELS / "10cls_GRAY" / "v4"), "--port", board.port,
                         "--baud", baud, "--bench", str(out.parent / "none.json"), "--csv", str(out), "--quiet"])
    finally:
        board.stop()


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as f:
        return {Path(r["file"]).name: r for r in csv.DictReader(f)}


def test_predict_reads_real_crops_and_skips_a_corrupt_one(real_data, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    truth = _real_crops(real_data, crops)
    (crops / "broken.jpg").write_bytes(b"not a jpeg")
    (crops / "notes.txt").write_text("not an image, not read")
    model = MODELS / "10cls_GRAY" / "v4"
    sha = hashlib.sha256((model / "model.tflite").read_bytes()).hexdigest()
    bench_json = tmp_path / "bench.json"
    bench_json.write_text(json.dumps([{"sha256": "0" * 64, "confidence_threshold": 0.1},
                                      {"sha256": sha, "confidence_threshold": 0.85}]))
    out = tmp_path / "readings.csv"

    rc = cli.main(["predict", str(crops), str(crops / "broken.jpg"), "--model", str(model), "--bench",
                   str(bench_json), "--csv", str(out), "--quiet"])

    assert rc == 0
    rows = _rows(out)
    assert set(rows) == set(truth) | {"broken.jpg"}
    assert len(out.read_text().splitlines()) == 1 + len(rows)  # a file named twice is read once
    assert rows["broken.jpg"]["reading"] == "" and "decode" in rows["broken.jpg"]["error"]
    printed = capsys.readouterr()
    assert "broken.jpg" in printed.err
    assert "threshold 0.850 from" in printed.out and "never seen a higher --threshold" in printed.out
    right = sum(int(rows[n]["reading"]) == labels.class10(v) for n, v in truth.items())
    assert right >= 0.9 * len(truth)
    for n in truth:  # the threshold is this model's row of the bench JSON
        assert rows[n]["sure"] == str(int(float(rows[n]["confidence"]) >= 0.85))
    assert {rows[n]["sure"] for n in truth} == {"0", "1"}


def test_predict_tenths_and_threshold_option(real_data, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    truth = _real_crops(real_data, crops, n=20)
    out = tmp_path / "readings.csv"

    rc = cli.main(["predict", str(crops), "--model", "100cls_GRAY/v15", "--threshold", "0.5",
                   "--bench", str(tmp_path / "none.json"), "--csv", str(out), "--quiet"])

    assert rc == 0
    rows = _rows(out)
    assert all(re.fullmatch(r"\d\.\d", rows[n]["reading"]) for n in truth)
    near = sum(
        labels.within_tolerance(
            [labels.class100(float(rows[n]["reading"]))], [labels.class100(v)]
        )[0]
        for n, v in truth.items()
    )
    assert near >= 0.8 * len(truth)
    assert all(rows[n]["sure"] == str(int(float(rows[n]["confidence"]) >= 0.5)) for n in truth)
    assert "never seen" not in capsys.readouterr().out  # a threshold of your own needs no warning


def test_predict_names_what_is_missing(tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "nowhere"), "--quiet"]) == 2
    assert "nowhere" in capsys.readouterr().err
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert cli.main(["predict", str(tmp_path), "--model", "no_such_model", "--quiet"]) == 2
    assert "no_such_model" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["predict", str(empty), "--quiet"]) == 2
    assert "no images" in capsys.readouterr().err


def test_predict_on_a_board_that_resets_mid_run(real_data, tmp_path, capsys):
    """--port: the crops go raw to the virtual device (the firmware core, real TFLM), which
    resets after 7 requests; the reset is detected, the lost requests re-sent, and the board's
    on-chip preprocessing reads like the PC."""
    from digitrec import device

    crops = tmp_path / "crops"
    crops.mkdir()
    truth = _real_crops(real_data, crops, n=24)
    (crops / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "readings.csv"
    board = device.VirtualProcess(MODELS / "10cls_GRAY" / "v4", 0, ["--reset-after", "7"])
    rc = _predict_on_board(crops, out, board, "0")

    assert rc == 0
    printed = capsys.readouterr()
    assert "board reset detected" in printed.out + printed.err
    assert "the board answered 24 of 24, " in printed.out
    rows = _rows(out)
    assert rows["broken.jpg"]["device_reading"] == "" and rows["broken.jpg"]["agrees"] == ""
    answered = [rows[n] for n in truth]
    assert all(r["device_reading"] for r in answered)  # none lost to the reset
    assert all(r["device_sent"].startswith("raw:") for r in answered)  # the chip preprocessed them
    assert sum(r["agrees"] == "1" for r in answered) >= len(answered) - 1  # 1 LSB of raw preprocessing
    for r in answered:
        assert r["agrees"] == str(int(r["device_reading"] == r["reading"]))


def test_predict_without_the_board_keeps_the_pc_readings(real_data, tmp_path, capsys):
    crops = tmp_path / "crops"
    crops.mkdir()
    truth = _real_crops(real_data, crops, n=5)
    out = tmp_path / "readings.csv"

    rc = cli.main(["predict", str(crops), "--model", "10cls_GRAY/v4", "--port", str(tmp_path / "ttyNONE"),
                   "--bench", str(tmp_path / "none.json"), "--csv", str(out), "--quiet"])

    assert rc == 3
    err = capsys.readouterr().err
    assert "ttyNONE" in err and "no such port" in err
    rows = _rows(out)
    assert all(rows[n]["reading"] and rows[n]["device_reading"] == "" for n in truth)


def test_predict_board_lost_mid_run_keeps_what_was_read(real_data, tmp_path, capsys):
    """The board dies while crops are in flight (a paced virtual device, killed after 3 s):
    the run stops with exit code 3, and the PC readings and the answers so far are written."""
    import threading

    from digitrec import device

    crops = tmp_path / "crops"
    crops.mkdir()
    truth = _real_crops(real_data, crops, n=24)
    out = tmp_path / "readings.csv"
    board = device.VirtualProcess(MODELS / "10cls_GRAY" / "v4", 115200)  # about 0.6 s per raw crop at this rate
    threading.Timer(3.0, board.proc.kill).start()
    rc = _predict_on_board(crops, out, board, "115200")

    assert rc == 3
    assert board.port in capsys.readouterr().err
    rows = _rows(out)
    assert all(rows[n]["reading"] for n in truth)  # every PC reading kept
    answered = [n for n in truth if rows[n]["device_reading"]]
    assert len(answered) < len(truth)
    assert all(rows[n]["agrees"] in ("0", "1") for n in answered)
