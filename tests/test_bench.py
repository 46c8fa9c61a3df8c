"""digitrec bench: metrics, batched vs per-image agreement, JSON/CSV/report, bad inputs.

Tiny full-integer models are built here with tf_keras (no shipped model is needed); the
data is a small synthetic haverland-layout folder (conftest.make_dataset) and, when the
real dataset is present, a symlinked slice of it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from digitrec import bench, cli, labels

SCHEMA = {  # key -> allowed types in every benchmarked (error-free) row
    "model": str, "classes": int, "color": str, "images": int, "accuracy": float,
    "size_bytes": int, "params": int, "arena_bytes": int, "macs": int, "pc_inf_per_s": float,
    "pc_e2e_per_s": float, "sha256": str, "interpreter": str, "batch_agrees": bool,
}  # fmt: skip


# ----------------------------------------------------------------------------- tiny models


def _convert(model, shape: tuple[int, int, int]) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def rep():
        for _ in range(8):
            yield [rng.random((1, *shape), dtype=np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def _tiny(classes: int, channels: int, height: int = 32) -> bytes:
    """conv(4) -> pool -> dense: a few hundred weights, converted full-integer."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(classes + channels + height)
    L = keras.layers
    model = keras.Sequential([
        L.Input((height, 20, channels)), L.Conv2D(4, 3, strides=2, padding="same", activation="relu"),
        L.MaxPool2D(4), L.Flatten(), L.Dense(classes, activation="softmax"),
    ])  # fmt: skip
    return _convert(model, (height, 20, channels))


@pytest.fixture(scope="session")
def tflites() -> dict[str, bytes]:
    pytest.importorskip("tf_keras")
    return {
        "g10": _tiny(10, 1),
        "r100": _tiny(100, 3),
        "g7": _tiny(7, 1),  # a class count no label set has
        "tall": _tiny(10, 1, height=40),  # input shape that does not fit 32x20
    }


def card_for(data: bytes, classes: int, color: str, **over) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    card = {
        "name": "tiny", "family": "test", "classes": classes, "color": color,
        "input": {"shape": [int(v) for v in i["shape"][1:]], "dtype": "int8",
                  "scale": float(i["quantization"][0]), "zero_point": int(i["quantization"][1])},
        "output": {"shape": [classes], "dtype": "int8",
                   "scale": float(o["quantization"][0]), "zero_point": int(o["quantization"][1])},
        "params": 123, "tflite_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        "macs": 4567, "arena_bytes": 8192, "ops": sorted({d["op_name"] for d in it._get_ops_details()}),
    }  # fmt: skip
    card.update(over)
    return card


def put(root: Path, mid: str, data: bytes, card: dict | None) -> Path:
    d = root / mid
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.tflite").write_bytes(data)
    if card is not None:
        (d / "card.json").write_text(json.dumps(card))
    return d / "model.tflite"


def _tiny_head(head: str) -> bytes:
    """A tiny 10-class graph ending in SOFTMAX, in logits, or in a fixed sum of 100 softmax tenths."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import tensorflow as tf
    import tf_keras as keras

    tf.random.set_seed(7)
    L = keras.layers
    x = inp = L.Input((32, 20, 1))
    x = L.Flatten()(L.MaxPool2D(4)(L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)))
    if head == "logits":
        out = L.Dense(10)(x)
    elif head == "softmax":
        out = L.Dense(10, activation="softmax")(x)
    else:  # digit sum: 100 tenths -> 10 digits with a fixed 0/1 matrix, as models._blocks.digit_sum_head
        tenths = L.Dense(100, activation="softmax")(x)
        out = L.Dense(10, use_bias=False, trainable=False, kernel_initializer="zeros")(tenths)
    model = keras.Model(inp, out)
    if head == "digit_sum":
        model.layers[-1].set_weights([labels.tenths_to_digits().astype(np.float32)])
    return _convert(model, (32, 20, 1))


@pytest.mark.parametrize("head, expected", [("softmax", True), ("logits", False), ("digit_sum", True)])
def test_which_outputs_are_probabilities(head, expected, tmp_path):
    """Softmax is applied to logits only: a digit-sum head already outputs probabilities."""
    pytest.importorskip("tf_keras")
    data = _tiny_head(head)
    m = bench.load_model("t", put(tmp_path, "10cls_GRAY/t", data, card_for(data, 10, "GRAY")))
    assert m.outputs_probabilities is expected
    x = np.random.default_rng(0).integers(-128, 128, (4, 32, 20, 1), dtype=np.int8)
    out = bench.predict_batched(data, x)
    p = m.probabilities(out)
    raw = (out.astype(np.float32) - m.out_q.zero_point) * m.out_q.scale
    assert np.allclose(p, raw) is expected  # probabilities are passed through, logits go through softmax
    assert np.allclose(p.sum(axis=1), 1.0, atol=0.05)


def test_shipped_digit_sum_model_reports_its_own_probabilities():
    repo = Path(__file__).resolve().parents[1]
    m = bench.load_model("10cls_GRAY/dr", repo / "exported_models" / "10cls_GRAY" / "dr" / "model.tflite")
    assert m.ops[-2:] == ["SOFTMAX", "FULLY_CONNECTED"] and m.outputs_probabilities


# ----------------------------------------------------------------------------- metrics


def test_exact_and_within_tenth_wraps_around():
    y = np.array([0, 99, 50, 50, 45, 94, 10])
    pred = np.array([99, 0, 52, 51, 47, 96, 10])
    m = bench.accuracy_metrics(pred, y, 100)
    assert m["accuracy"] == pytest.approx(1 / 7)  # only 10 == 10
    # within 0.1: 0<->99 and 99<->0 (wrap), 50->51, 10->10; not 50->52, 45->47, 94->96
    assert m["accuracy_tol"] == pytest.approx(4 / 7)
    # digits (nearest, half up, mod 10): 0/99->0/0, 50/52->5/5, 50/51, 45/47->5/5, 94/96->9/0, 10/10
    assert m["accuracy_digit"] == pytest.approx(6 / 7)
    assert m["per_class_accuracy"][10] == 1.0 and m["per_class_accuracy"][50] == 0.0
    assert m["per_class_accuracy"][1] is None  # no image of 0.1


def test_ten_classes_have_no_tolerance_figure():
    m = bench.accuracy_metrics(np.array([1, 2, 3, 9]), np.array([1, 2, 4, 0]), 10)
    assert m["accuracy"] == 0.5 and m["accuracy_digit"] == 0.5
    assert m["accuracy_tol"] is None  # 9 vs 0 is wrong, not "near"
    assert len(m["per_class_accuracy"]) == 10


def test_per_meter_accuracy_and_hardest_meters():
    pred = np.array([1, 1, 2, 2, 3, 3])
    y = np.array([1, 1, 2, 0, 0, 0])
    meters = ["a", "a", "b", "b", "c", "c"]
    per = bench.per_meter_accuracy(pred, y, 10, meters)
    assert [(m["meter"], m["images"], m["accuracy"]) for m in per] == [("a", 2, 1.0), ("b", 2, 0.5), ("c", 2, 0.0)]
    tenths = bench.per_meter_accuracy(np.array([11, 15]), np.array([10, 10]), 100, ["a", "a"])[0]
    assert (tenths["accuracy"], tenths["accuracy_tol"], tenths["accuracy_digit"]) == (0.0, 0.5, 0.5)
    rows = [{"model": "m1", "classes": 10, "_meters": per},
            {"model": "m2", "classes": 10, "_meters": [{**m, "accuracy": 1.0} for m in per]},
            {"model": "m3", "classes": 100, "_meters": per}]  # fmt: skip
    hard = bench.hardest_meters(rows, 10, n=2, min_images=2)
    assert [(h["meter"], h["median"], h["best_model"], h["best"]) for h in hard] == [
        ("c", 0.5, "m2", 1.0), ("b", 0.75, "m2", 1.0)]  # fmt: skip
    assert bench.hardest_meters(rows, 10, min_images=3) == []


def test_confusion_and_worst_mistakes_order():
    y = np.array([10, 10, 20, 30, 40])
    pred = np.array([10, 11, 50, 31, 90])
    conf = np.array([0.9, 0.99, 0.4, 0.95, 0.6])
    cm = bench.confusion(pred, y, 100)
    assert cm.sum() == 5 and cm[10, 10] == 1 and cm[20, 50] == 1
    # far mistakes first (most confident first), near ones (within 0.1) after
    assert list(bench.worst_mistakes(pred, y, conf, 100, 10)) == [4, 2, 1, 3]


def test_pareto_front_and_budgets():
    assert bench.pareto_front([(10, 0.5), (20, 0.4), (30, 0.9), (40, 0.9), (5, 0.1)]) == [4, 0, 2]
    rows = [
        {"model": "a", "classes": 10, "size_bytes": 30_000, "accuracy": 0.9, "accuracy_tol": None},
        {"model": "b", "classes": 10, "size_bytes": 60_000, "accuracy": 0.95, "accuracy_tol": None},
        {"model": "c", "classes": 10, "size_bytes": 300_000, "accuracy": 0.99, "accuracy_tol": None},
    ]
    best = {b["budget_kb"]: b["row"] for b in bench.best_per_budget(rows) if b["classes"] == 10}
    assert best[32]["model"] == "a" and best[64]["model"] == "b" and best[256]["model"] == "b"
    # a 100-class model competes as a digit reader on its rounded tenths
    for r in rows:
        r["accuracy_digit"] = r["accuracy"]
    rows.append({"model": "t", "classes": 100, "size_bytes": 50_000, "accuracy": 0.8, "accuracy_tol": 0.98,
                 "accuracy_digit": 0.97, "color": "GRAY"})
    digit = {b["budget_kb"]: b["row"] for b in bench.best_digit_reader_per_budget(rows)}
    assert digit[32]["model"] == "a" and digit[64]["model"] == "t" and digit[256]["model"] == "t"
    assert "| 64 KB | t | 97.0 % |" in bench.digit_budget_markdown(rows)


def test_threshold_that_answers_nothing_on_test_is_plotted_and_tabled(tmp_path):
    """A threshold reached on validation can answer no test image (accuracy of answers None)."""
    from digitrec import confidence

    conf, correct = np.array([0.3, 0.5, 0.6]), np.array([True, False, True])
    answered, acc = confidence.answered(conf, correct, 0.9)
    assert (answered, acc) == (0.0, None)
    row = {"model": "10cls_GRAY/m", "classes": 10, "size_bytes": 30_000, "accuracy": 2 / 3, "accuracy_tol": None,
           "confidence_target": 0.995, "confidence_threshold": 0.9, "answered": answered, "accuracy_answered": acc,
           "_coverage_curve": confidence.coverage_curve(conf, correct)}
    bench.plot_accuracy_vs_answered([row], tmp_path / "answered.png")
    assert (tmp_path / "answered.png").stat().st_size > 0
    assert bench.confidence_cells([row])[0][4:6] == ["0.0 %", "-"]


# ----------------------------------------------------------------------------- inference


@pytest.mark.parametrize("name", ["g10", "r100"])
def test_batched_and_per_image_outputs_agree_exactly(tflites, name):
    data = tflites[name]
    channels = 1 if name == "g10" else 3
    x = np.random.default_rng(1).integers(-128, 128, size=(203, 32, 20, channels), dtype=np.int8)
    batched = bench.predict_batched(data, x, batch=64)  # 203 = 3 full batches + a padded tail
    it = bench.make_interpreter(data)
    it.allocate_tensors()
    loop = bench.predict_loop(it, x)
    assert batched.dtype == np.int8 and batched.shape == loop.outputs.shape
    assert np.array_equal(batched, loop.outputs)
    assert loop.invoke_s > 0 and loop.loop_s >= loop.invoke_s


# ----------------------------------------------------------------------------- whole command


@pytest.fixture()
def zoo(tmp_path, tflites) -> Path:
    """Two good models, one without a card, and one of each bad input."""
    root = tmp_path / "zoo"
    g10, r100 = tflites["g10"], tflites["r100"]
    put(root, "10cls_GRAY/good", g10, card_for(g10, 10, "GRAY"))
    put(root, "100cls_RGB/good", r100, card_for(r100, 100, "RGB", arena_bytes=None))
    put(root, "10cls_GRAY/nocard", g10, None)
    put(root, "10cls_GRAY/corrupt", g10[: len(g10) // 3], card_for(g10, 10, "GRAY"))
    put(root, "10cls_GRAY/sevenclasses", tflites["g7"], card_for(tflites["g7"], 7, "GRAY"))
    put(root, "10cls_GRAY/tall", tflites["tall"], card_for(tflites["tall"], 10, "GRAY"))
    put(root, "10cls_GRAY/badhash", g10, card_for(g10, 10, "GRAY", sha256="0" * 64))
    put(root, "10cls_GRAY/badbytes", g10, card_for(g10, 10, "GRAY", tflite_bytes=len(g10) + 1))
    put(root, "10cls_GRAY/badclasses", g10, card_for(g10, 100, "GRAY"))
    put(root, "100cls_GRAY/misfiled", g10, card_for(g10, 10, "GRAY"))
    return root


BAD = {  # model id -> words its error must contain
    "10cls_GRAY/corrupt": "not a valid TFLite model",
    "10cls_GRAY/sevenclasses": "does not fit the labels",
    "10cls_GRAY/tall": "does not fit the data",
    "10cls_GRAY/badhash": "sha256",
    "10cls_GRAY/badbytes": "tflite_bytes",
    "10cls_GRAY/badclasses": "classes",
    "100cls_GRAY/misfiled": "lives in 100cls_GRAY",
}


def run_bench(zoo: Path, data: Path, out: Path, *extra: str) -> int:
    argv = ["bench", "--data", str(data), "--models-dir", str(zoo), "--report", str(out / "rep"),
            "--json", str(out / "rows.json"), "--csv", str(out / "rows.csv"), "--cache", str(out / "cache"),
            "--loop-sample", "20", *extra]  # fmt: skip
    return cli.main(argv)


def test_bench_writes_rows_and_names_every_bad_file(zoo, make_dataset, tmp_path):
    data = make_dataset(meters=2, per_meter=15)
    assert run_bench(zoo, data, tmp_path, "--split", "all") == 1  # errors -> exit 1
    rows = {r["model"]: r for r in json.loads((tmp_path / "rows.json").read_text())}
    assert set(rows) == {"10cls_GRAY/good", "100cls_RGB/good", "10cls_GRAY/nocard", *BAD}
    for mid, words in BAD.items():
        err = rows[mid]["error"]
        assert err and words in err, (mid, err)
        assert str(zoo / mid) in err  # names the file (the .tflite or its card.json)
    for mid in ("10cls_GRAY/good", "100cls_RGB/good", "10cls_GRAY/nocard"):
        r = rows[mid]
        assert r["error"] is None, r["error"]
        for key, typ in SCHEMA.items():
            assert isinstance(r[key], typ), (mid, key, r[key])
        assert r["images"] == 30 and 0 <= r["accuracy"] <= 1 and r["batch_agrees"] is True
        assert r["cache_agrees"] is True  # cached arrays == preprocess() of the decoded files
        assert r["pc_inf_per_s"] > 0 and "no delegates" in r["interpreter"]
        assert r["size_bytes"] == (zoo / mid / "model.tflite").stat().st_size
    assert rows["10cls_GRAY/good"]["accuracy_tol"] is None
    assert 0 <= rows["100cls_RGB/good"]["accuracy_tol"] <= 1
    assert rows["10cls_GRAY/good"]["params"] == 123  # from the card
    assert rows["10cls_GRAY/nocard"]["sources"]["macs"] == "measured"
    assert rows["10cls_GRAY/nocard"]["macs"] > 0 and rows["10cls_GRAY/nocard"]["params"] > 0

    with (tmp_path / "rows.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {"model", "accuracy", "accuracy_tol", "pc_inf_per_s"} <= set(table[0])
    rep = tmp_path / "rep"
    report = (rep / "report.md").read_text()
    for mid in BAD:
        assert f"`{mid}`" in report.split("## Errors", 1)[1]
    assert bench.PUBLISHED_NOTE in report and "accuracy_vs_size.png" in report
    assert (rep / "accuracy_vs_size.png").stat().st_size > 0
    assert (rep / rows["10cls_GRAY/good"]["confusion_png"]).is_file()
    assert json.loads((rep / "bench.json").read_text())  # always written beside the report
    with (rep / "meters.csv").open() as f:
        meters = list(csv.DictReader(f))
    for mid in ("10cls_GRAY/good", "100cls_RGB/good"):
        mine = [m for m in meters if m["model"] == mid]
        assert {m["meter"] for m in mine} == {"images/meter0", "images/meter1"}
        assert sum(int(m["images"]) for m in mine) == rows[mid]["images"]
        correct = sum(float(m["accuracy"]) * int(m["images"]) for m in mine)
        assert abs(correct / rows[mid]["images"] - rows[mid]["accuracy"]) < 1e-6
        assert [m["images"] for m in bench.read_meters_csv(rep / "meters.csv")[mid]] == [15, 15]
    assert "## Hardest meter folders" in report


def test_model_globs_and_test_split(zoo, make_dataset, tmp_path):
    data = make_dataset(meters=4, per_meter=25)
    code = run_bench(zoo, data, tmp_path, "--models", "*good", "--exclude", "100cls_*", "--no-plots")
    assert code == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["model"] for r in rows] == ["10cls_GRAY/good"]
    from digitrec.data import load_dataset

    ds = load_dataset(data, cache_dir=tmp_path / "cache", progress=False)
    assert rows[0]["images"] == len(ds.split("cluster")["test"]) > 0
    assert rows[0]["split"] == "test" and rows[0]["data_fingerprint"] == ds.fingerprint


def test_real_data_slice(real_data, tflites, tmp_path):
    """A symlinked slice of the real dataset: JPEG decode path and cache agree with preprocess()."""
    files = sorted((real_data / "images").rglob("*.jpg"))[::500][:40]
    for f in files:
        link = tmp_path / "slice" / "images" / f.parent.name / f.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f)
    zoo = tmp_path / "zoo"
    put(zoo, "10cls_GRAY/good", tflites["g10"], card_for(tflites["g10"], 10, "GRAY"))
    put(zoo, "100cls_RGB/good", tflites["r100"], card_for(tflites["r100"], 100, "RGB"))
    assert run_bench(zoo, tmp_path / "slice", tmp_path, "--split", "all", "--no-plots") == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert all(r["images"] == len(files) and r["cache_agrees"] and r["batch_agrees"] for r in rows)


# ----------------------------------------------------------------------------- README tables


def _tool(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, bench.REPO_ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_meter_errors_sorts_mistakes_by_kind():
    tenths = np.array([44, 45, 12, 78, 90, 30, 61])
    y10 = labels.class10_from_class100(tenths)  # 4 5 1 8 9 3 6
    pred = np.array([5, 5, 2, 8, 3, 0, 4])  # at x.4/x.5, off by 1, right, off by 4 (9 -> 3), 3 -> 0, 6 -> 4
    k = _tool("meter_errors").error_kinds(pred, y10, tenths)
    assert k == {"images": 7, "wrong": 5, "boundary": 1, "off1": 1, "off2plus": 3}


def test_rgb_table_names_what_the_twins_recipes_differ_in():
    tool = _tool("readme_tables")
    gray = {"epochs": 80, "qat_dropout": False, "augment": {"invert_p": 0.3, "erase_p": 0.0, "channel_gain": 0.0},
            "synth": {"fonts": ["a"] * 22}}
    same = {**gray, "augment": {"invert_p": 0.3, "channel_gain": 0.1}}  # older card without erase_p; colour gain
    assert tool.recipe_differences(gray, same) == []
    rgb = {**same, "qat_dropout": True, "augment": {"invert_p": 0.0}, "synth": {"fonts": ["a"] * 12}}
    assert tool.recipe_differences(gray, rgb) == ["qat_dropout False / True", "invert_p 0.3 / 0.0",
                                                  "synthetic-digit fonts 22 / 12"]
    card = {"family": "dr", "classes": 10, "accuracy": {"int8_test": 0.98}}
    block = tool.rgb_block([("10cls_GRAY/dr", {**card, "color": "GRAY", "training": gray}),
                            ("10cls_RGB/dr", {**card, "color": "RGB", "training": rgb})])
    assert "| dr | 10 | 98.0 % (80) | 98.0 % (80) | +0.0 pt | qat_dropout False / True; invert_p" in block
    assert "colour only" not in block  # no twin to summarise
    better = {**card, "color": "RGB", "training": same, "accuracy": {"int8_test": 0.983}}
    block = tool.rgb_block([("10cls_GRAY/dr", {**card, "color": "GRAY", "training": gray}), ("10cls_RGB/dr", better)])
    assert "| +0.3 pt | no |" in block and "In the one twin that differs in colour only, RGB reads the test split +0.3 pt" in block
    block = tool.rgb_block([("10cls_GRAY/dr", {**card, "color": "GRAY", "training": gray}), ("10cls_RGB/dr", better),
                            ("10cls_GRAY/v4", {**card, "family": "v4", "color": "GRAY", "training": gray}),
                            ("10cls_RGB/v4", {**better, "family": "v4", "accuracy": {"int8_test": 0.979}})])
    assert "Of the 2 twins that differ in colour only, RGB reads the test split -0.1 pt to +0.3 pt" in block


def test_readme_data_block_shows_load_times_only_when_measured():
    tool = _tool("readme_tables")
    stats = {"images": 20, "groups": 2, "skipped": 1, "duplicate_groups": 0, "duplicate_copies": 0,
             "conflicting_groups": 0, "near_duplicate_clusters": 20, "largest_cluster": 1, "split_mode": "cluster",
             "splits": {"train": 14, "val": 3, "test": 3}, "fingerprint": "abc"}  # fmt: skip
    assert "load time" not in tool.data_block(stats)
    timing = {"first_s": 12.34, "cached_s": 1.06, "files": 25663, "workers": 2}
    block = tool.data_block({**stats, "load_timing": timing})
    assert "| load time: first (25,663 files decoded on 2 processes) / cached | 12.3 s / 1.1 s |" in block


def test_readme_tables_rewrite_only_between_markers(tmp_path):
    tool = _tool("readme_tables")
    good = dict.fromkeys(bench.ROW_KEYS)
    good.update(model="10cls_GRAY/v4", classes=10, color="GRAY", images=100, accuracy=0.97, size_bytes=50_000,
                params=40_000, arena_bytes=20_000, macs=1_000_000, pc_inf_per_s=9000.0, split="test",
                confidence_target=0.995, confidence_threshold=0.68359375, confidence_threshold_int8=47,
                answered=0.944, accuracy_answered=0.9962)  # fmt: skip
    bad = dict(
        dict.fromkeys(bench.ROW_KEYS), model="10cls_GRAY/broken", error="x.tflite: not a valid TFLite model"
    )
    rows_json = tmp_path / "bench.json"
    rows_json.write_text(json.dumps([good, bad]))
    (tmp_path / "accuracy_vs_size.png").write_bytes(b"png")
    (tmp_path / "accuracy_vs_answered.png").write_bytes(b"png2")
    bench.write_meters_csv([{**good, "_meters": [{"meter": "images/pp", "images": 25, "accuracy": 0.72,
                                                   "accuracy_tol": None, "accuracy_digit": 0.72}]}],
                           tmp_path / "meters.csv")  # fmt: skip
    put(tmp_path / "zoo", "10cls_GRAY/v4", b"tflite", {"classes": 10, "color": "GRAY", "params": 40_000,
                                                          "training": {"augment": {"invert_p": 0.3},
                                                                       "weight_decay": 1e-4}})
    put(tmp_path / "zoo", "10cls_GRAY/dr", b"tflite", {"classes": 10, "color": "GRAY", "params": 50_000,
                                                          "training": {"augment": {"aspect": 0.1, "mixup": 0.2},
                                                                       "weight_decay": 0.05,
                                                                       "synth": {"fraction": 0.5, "fonts": ["a"] * 22}}})
    put(tmp_path / "zoo", "10cls_GRAY/v3", b"tflite", {"classes": 10, "color": "GRAY", "params": 30_000})
    put(tmp_path / "zoo", "10cls_GRAY/v6", b"tflite", {"classes": 10, "color": "GRAY", "params": 20_000,
                                                          "training": {"synth": {"fraction": 1.0, "fonts": ["a"] * 12}}})
    readme = tmp_path / "README.md"
    before = ("# title\n\ntext\n<!-- bench:begin -->\nstale\n<!-- bench:end -->\nmiddle\n"
              "<!-- confidence:begin -->\nstale\n<!-- confidence:end -->\n")
    after = "<!-- models:begin --><!-- models:end -->\nend\n"
    readme.write_text(before + after)
    args = ["--json", str(rows_json), "--models-dir", str(tmp_path / "zoo"), "--readme", str(readme),
            "--plot-dest", str(tmp_path / "docs" / "img" / "acc.png")]  # fmt: skip
    assert tool.main([*args, "--check"]) == 1  # stale
    assert tool.main(args) == 0
    text = readme.read_text()
    assert text.startswith("# title\n\ntext\n<!-- bench:begin -->\n") and text.endswith(
        "<!-- models:end -->\nend\n"
    )
    assert "stale" not in text and "\nmiddle\n" in text
    bench_part = text.split("<!-- bench:end -->")[0]
    assert "| 10cls_GRAY/v4 | 10 | GRAY | 100 | 97.0 % |" in bench_part and "ERROR" in bench_part
    assert bench.PUBLISHED_NOTE in bench_part and "](docs/img/acc.png)" in bench_part
    assert "| `images/pp` | 25 | 72.0 % | 10cls_GRAY/v4 | 72.0 % |" in bench_part  # from meters.csv
    models_part = text.split("<!-- models:begin -->")[1]
    assert "| 10cls_GRAY/v4 | - | 10 | GRAY | 40,000 |" in models_part
    assert [line.split(" | ")[-2] for line in models_part.splitlines() if line.startswith("| 10cls")] == \
        ["yes + 22 fonts + mixup, decay", "no", "yes", "12 fonts only"]
    assert (tmp_path / "docs" / "img" / "acc.png").read_bytes() == b"png"
    conf_part = text.split("<!-- confidence:begin -->")[1].split("<!-- confidence:end -->")[0]
    assert "| 10cls_GRAY/v4 | 48.8 | 99.5 % | 0.684 (47) | 94.4 % | 99.6 % | 97.0 % |" in conf_part
    assert "10cls_GRAY/broken" not in conf_part and "](docs/img/accuracy_vs_answered.png)" in conf_part
    assert (tmp_path / "docs" / "img" / "accuracy_vs_answered.png").read_bytes() == b"png2"
    assert tool.main([*args, "--check"]) == 0  # idempotent


def test_digit_accuracy_split_at_the_rounding_boundary():
    # tenths 44 and 45 sit on the x.4/x.5 boundary; 12, 78, 90 do not
    y100 = np.array([44, 45, 12, 78, 90])
    y10 = np.array([4, 5, 1, 8, 9])
    pred10 = np.array([5, 5, 1, 8, 0])  # wrong at 4.4 and at 9.0
    m = bench.accuracy_metrics(pred10, y10, 10, y100)
    assert m["accuracy_digit_boundary"] == 0.5 and m["accuracy_digit_clear"] == pytest.approx(2 / 3)
    m = bench.accuracy_metrics(np.array([45, 44, 12, 78, 90]), y100, 100, y100)  # tenths, mapped to digits
    assert m["accuracy_digit_boundary"] == 0.0 and m["accuracy_digit_clear"] == 1.0


def test_ensemble_ceiling_bounds(real_data, capsys):
    """tools/ensemble_ceiling.py: 'at least one model right' is never below any model's own accuracy."""
    tool = _tool("ensemble_ceiling")
    assert labels.circular_distance(np.array([99, 0, 52]), np.array([0, 99, 50])).tolist() == [1, 1, 2]  # its "within 0.1"
    assert tool.main(["100cls_GRAY/v17", "100cls_GRAY/v6", "--data", str(real_data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    acc = {line.split()[0]: float(line.split()[1]) for line in lines if line.startswith("  100cls")}
    any_right = float(next(line for line in lines if "at least one model right" in line).split()[-2])
    assert set(acc) == {"100cls_GRAY/v17", "100cls_GRAY/v6"} and any_right >= max(acc.values())
    assert any("ensemble (mean probability)" in line and "within 0.1" in line for line in lines)
    assert any("smoothed argmax" in line and "circular mean" in line for line in lines)


def test_threshold_cuts_agree_with_the_bench(real_data, tmp_path, capsys):
    """tools/threshold_cuts.py: at cut 0 every image is answered at the model's accuracy; higher
    cuts answer fewer; the bench threshold is the one confidence.threshold_for picks on val."""
    from digitrec import confidence

    tool = _tool("threshold_cuts")
    out = tmp_path / "cuts.json"
    models = bench.REPO_ROOT / "exported_models"
    assert tool.main([str(models), str(models), "--model", "10cls_GRAY/v17", "--data", str(real_data),
                      "--cuts", "0", "0.8", "0.95", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 2 and rows[0] == {**rows[1], "dir": rows[0]["dir"]}
    row = rows[0]
    assert row["cuts"]["0"] == [1.0, row["accuracy"]]
    assert 1.0 >= row["cuts"]["0.8"][0] >= row["cuts"]["0.95"][0] and row["cuts"]["0.8"][1] > row["accuracy"]
    test = bench.DataSource(real_data, split="test")
    m = bench.load_model("10cls_GRAY/v17", models / "10cls_GRAY/v17/model.tflite")
    chosen = confidence.threshold_for(*tool.confident_right(m, test.calibration), confidence.TARGETS[10])
    assert row["bench_threshold"] == chosen and row["bench"] == list(confidence.answered(*tool.confident_right(m, test), chosen))
    assert "10cls_GRAY/v17 over 2 dirs:" in capsys.readouterr().out


def test_own_meter_frames_split(real_data):
    """tools/own_meter_frames.py: each held-out folder gives at least K frames to training as whole
    near-duplicate clusters; no remaining held-out frame has a near-copy among them; val is untouched."""
    from digitrec import data

    tool = _tool("own_meter_frames")
    ds = data.load_dataset(real_data, progress=False)
    plain = ds.split("meter")
    split = tool.own_frames_split(ds, 20, 0)
    moved = set(split["train"]) - set(plain["train"])
    assert split["val"] == plain["val"] and moved | set(split["test"]) == set(plain["test"])
    assert not {ds.items[i].cluster for i in moved} & {ds.items[i].cluster for i in split["test"]}
    for folder in {ds.items[i].group for i in plain["test"]}:
        had = sum(ds.items[i].group == folder for i in plain["test"])
        assert sum(ds.items[i].group == folder for i in moved) >= min(20, had)
    assert tool.own_frames_split(ds, 20, 0) == split and tool.own_frames_split(ds, 20, 1) != split
    weighted = tool.own_frames_split(ds, 20, 0, repeat=3)  # each moved frame three times, nothing else
    assert sorted(weighted["train"]) == sorted(split["train"] + 2 * sorted(moved))
    assert weighted["train"] == split["train"] + 2 * sorted(moved)  # whole passes: the order the figures used
    assert weighted["test"] == split["test"] and weighted["val"] == split["val"]
    with pytest.raises(ValueError, match="repeat 0"):
        tool.own_frames_split(ds, 20, 0, repeat=0)


def test_device_table_shows_both_pc_answers():
    tool = _tool("readme_tables")
    run = {"board": "virtual", "model": "dr", "classes": 10, "color": "GRAY", "mode": "tensor", "images": 4,
           "device_accuracy": 0.75, "host_accuracy": 0.75, "agreement": 0.75, "agreement_tflm": 1.0,
           "scores_identical_tflm": 1.0, "device_infer_us_median": 12000.0, "device_preprocess_us_median": 0.0,
           "link_utilization": 0.5, "baud": 921600, "retries": 0, "resets": 0, "timings_source": "device"}
    block = tool.device_block({"runs": [run]})
    header = next(line for line in block.splitlines() if line.startswith("| board"))
    assert "agreement (PC TFLM) | scores identical (PC TFLM)" in header
    assert "| 75.00 % | 100.00 % | 100.00 % | 12,000 |" in block
    assert header.count("|") == block.splitlines()[block.splitlines().index(header) + 1].count("|")
    old = {k: v for k, v in run.items() if not k.endswith("_tflm")}  # a run made with --no-tflm
    assert "| 75.00 % | - | - | 12,000 |" in tool.device_block({"runs": [old]})
