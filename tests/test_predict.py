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

    rc = cli.main(["predict", str(crops), "--model", str(model), "--bench", str(bench_json),
                   "--csv", str(out), "--quiet"])

    assert rc == 0
    rows = _rows(out)
    assert set(rows) == set(truth) | {"broken.jpg"}
    assert rows["broken.jpg"]["reading"] == "" and "decode" in rows["broken.jpg"]["error"]
    assert "broken.jpg" in capsys.readouterr().err
    right = sum(int(rows[n]["reading"]) == labels.class10(v) for n, v in truth.items())
    assert right >= 0.9 * len(truth)
    for n in truth:  # the threshold is this model's row of the bench JSON
        assert rows[n]["sure"] == str(int(float(rows[n]["confidence"]) >= 0.85))
    assert {rows[n]["sure"] for n in truth} == {"0", "1"}


def test_predict_tenths_and_threshold_option(real_data, tmp_path):
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
