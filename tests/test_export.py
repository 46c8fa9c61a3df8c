"""Tiny train -> QAT -> export runs (synthetic data, and a slice of the real dataset)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pytest

from digitrec import export, preprocess, train


def synthetic(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable toy digits: a bright bar whose height encodes the class."""
    r = np.random.default_rng(seed)
    y = r.integers(0, classes, n)
    x = (r.random((n, 32, 20, 1)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        row = int(c * 30 / classes)
        x[i, row : row + 2, 4:16, :] = 230
    return x, y.astype(np.int64)


def synthetic_splits(classes: int = 10) -> train.Splits:
    xs, ys = {}, {}
    for seed, (name, n) in enumerate((("train", 384), ("val", 96), ("test", 96))):
        xs[name], ys[name] = synthetic(n, classes, seed)
    return train.Splits(xs, ys, {"fingerprint": "synthetic", "split_mode": "synthetic", "train": 384, "val": 96, "test": 96})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=2, qat_epochs=1, batch=64)
    card = train.train_model(cfg, splits, root / "out", root / "runs")
    return root / "out" / "10cls_GRAY" / "v4", card, splits


def test_model_dir_contents(exported):
    out, card, _ = exported
    for f in ("model.tflite", "model_data.h", "model_data.cc", "card.json", "training_log.csv", "learning_curves.png"):
        assert (out / f).exists(), f
    data = (out / "model.tflite").read_bytes()
    on_disk = json.loads((out / "card.json").read_text())
    assert on_disk == card
    assert card["tflite_bytes"] == len(data)
    assert card["input"] == {"shape": [32, 20, 1], "dtype": "int8", "scale": pytest.approx(1 / 255, rel=1e-3),
                             "zero_point": -128}
    assert card["output"]["shape"] == [10] and card["output"]["dtype"] == "int8"
    assert card["macs"] > 1_000_000 and card["params"] > 40_000
    assert card["data"]["fingerprint"] == "synthetic"
    assert card["training"]["epochs"] == 2 and card["training"]["qat_epochs"] == 1
    for key in ("float_test", "int8_test"):
        assert 0.0 <= card["accuracy"][key] <= 1.0
    export.check_ops(card["ops"])


def test_c_array(exported):
    out, card, _ = exported
    h = (out / "model_data.h").read_text()
    cc = (out / "model_data.cc").read_text()
    assert f'#define DR_MODEL_SHA256 "{card["sha256"]}"' in h
    assert f"#define DR_MODEL_ARENA_BYTES {card['arena_bytes']}" in h
    assert '#define DR_MODEL_COLOR "GRAY"' in h and "#define DR_MODEL_CLASSES 10" in h
    assert "extern const unsigned char dr_model_data[];" in h
    assert "alignas(16) const unsigned char dr_model_data[] = {" in cc
    body = cc[cc.index("{") + 1 : cc.index("};")]
    blob = bytes(int(tok, 16) for tok in body.replace(",", " ").split())
    assert blob == (out / "model.tflite").read_bytes()
    assert f"dr_model_data_len = {len(blob)};" in cc


def test_tflm_and_tflite_agree_within_one_lsb(exported):
    out, card, splits = exported
    data = (out / "model.tflite").read_bytes()
    q = preprocess.Quant(card["input"]["scale"], card["input"]["zero_point"])
    x = preprocess.to_int8(splits.x["test"][:24], q)
    micro = export.tflm_predict(data, x, card["arena_bytes"]).astype(np.int32)
    ref = export.litert_predict(data, x).astype(np.int32)
    assert np.abs(micro - ref).max() <= 1


def test_arena_is_tight(exported):
    out, card, _ = exported
    data = (out / "model.tflite").read_bytes()
    assert export.arena_ok(data, card["arena_bytes"])
    assert not export.arena_ok(data, int(card["arena_bytes"] * 0.9))


def test_names_are_stripped_and_buffers_aligned(exported):
    out, _, splits = exported
    data = (out / "model.tflite").read_bytes()
    assert b"conv2d" not in data.lower() and b"serving_default" not in data
    spans = export.buffer_spans(data)
    assert spans and all(pos % export.BUFFER_ALIGNMENT == 0 for pos, _ in spans)
    # stripping a shipped (converter-made) model changes no output and only shrinks it
    shipped = Path(__file__).resolve().parents[1] / "exported_models" / "10cls_GRAY" / "dr" / "model.tflite"
    original = shipped.read_bytes()
    stripped = export.strip_names(original)
    assert len(stripped) <= len(original)
    x = np.random.default_rng(3).integers(-128, 128, (32, 32, 20, 1), dtype=np.int8)
    np.testing.assert_array_equal(export.litert_predict(stripped, x), export.litert_predict(original, x))


def test_card_up_to_date(exported):
    out, card, _ = exported
    cfg = train.TrainConfig(model="v4", classes=10, epochs=2, qat_epochs=1, batch=64)
    assert train.card_up_to_date(out.parent.parent, cfg, "synthetic")
    assert not train.card_up_to_date(out.parent.parent, cfg, "other-data")


def test_augmentation_is_seeded_and_in_range():
    import tensorflow as tf

    cfg = train.TrainConfig(model="v4", classes=100, epochs=1)
    x = tf.constant(np.random.default_rng(0).random((8, 32, 20, 1)), tf.float32)
    a = train.augment(x, tf.constant([1, 2], tf.int64), cfg.aug()).numpy()
    b = train.augment(x, tf.constant([1, 2], tf.int64), cfg.aug()).numpy()
    c = train.augment(x, tf.constant([1, 3], tf.int64), cfg.aug()).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_inversion_and_aspect_augmentation():
    import tensorflow as tf

    off = {k: 0.0 for k in train.TrainConfig("v4").aug()}
    x = tf.constant(np.random.default_rng(1).random((4, 32, 20, 1)), tf.float32)
    seed = tf.constant([5, 6], tf.int64)
    plain = train.augment(x, seed, off).numpy()
    np.testing.assert_allclose(plain, x.numpy(), atol=1e-4)  # everything off: identity
    inverted = train.augment(x, seed, {**off, "invert_p": 1.0}).numpy()
    np.testing.assert_allclose(inverted, 1.0 - x.numpy(), atol=1e-4)
    # a vertical bar keeps its rows and changes its width when stretched
    bar = np.zeros((1, 32, 20, 1), np.float32)
    bar[0, 4:28, 8:12] = 1.0
    widths = [int((train.augment(tf.constant(bar), tf.constant([s, 0], tf.int64), {**off, "aspect": 0.4})
                    .numpy()[0, 16, :, 0] > 0.5).sum()) for s in range(6)]
    assert len(set(widths)) > 1 and min(widths) >= 2
    # keys added later do not change the hash of a recipe that leaves them off
    assert train.TrainConfig("v4").config_hash() == train.TrainConfig("v4", augment={"invert_p": 0.0}).config_hash()
    assert train.TrainConfig("v4").config_hash() != train.TrainConfig("v4", augment={"invert_p": 0.3}).config_hash()


def test_shear_and_stroke_augmentation():
    import tensorflow as tf

    off = {k: 0.0 for k in train.TrainConfig("v4").aug()}
    bar = np.zeros((1, 32, 20, 1), np.float32)
    bar[0, 2:30, 8:12] = 1.0  # a vertical stroke, 4 px wide

    def cols(img, row):
        return np.flatnonzero(img[0, row, :, 0] > 0.5)

    # shear slants the stroke: its top and bottom rows move apart sideways, its width stays
    sheared = [train.augment(tf.constant(bar), tf.constant([s, 0], tf.int64), {**off, "shear": 0.3}).numpy()
               for s in range(6)]
    offsets = [cols(b, 4).mean() - cols(b, 27).mean() for b in sheared]
    assert max(abs(o) for o in offsets) > 2 and len({round(o, 1) for o in offsets}) > 1
    assert all(3 <= len(cols(b, 16)) <= 5 for b in sheared)
    # strokes get thicker or thinner (not shifted), never brighter than white or below black
    out = train.augment(tf.constant(np.repeat(bar, 32, axis=0)), tf.constant([0, 1], tf.int64),
                        {**off, "stroke_p": 1.0}).numpy()
    assert out.min() >= 0.0 and out.max() <= 1.0
    widths = [len(cols(out[i:i + 1], 16)) for i in range(32)]
    assert min(widths) < 4 < max(widths)
    assert all(abs(cols(out[i:i + 1], 16).mean() - 9.5) < 0.6 for i in range(32))
    assert train.TrainConfig("v4").config_hash() == train.TrainConfig("v4", augment={"shear": 0.0}).config_hash()


def test_random_erasing():
    import tensorflow as tf

    off = {k: 0.0 for k in train.TrainConfig("v4").aug()}
    x = np.full((64, 32, 20, 1), 0.5, np.float32)
    out = train.augment(tf.constant(x), tf.constant([3, 4], tf.int64), {**off, "erase_p": 0.5}).numpy()
    changed = (np.abs(out - 0.5) > 1e-3).reshape(64, -1)
    erased = changed.any(axis=1)
    assert 16 <= erased.sum() <= 48  # about half of the crops
    assert changed[erased].mean(axis=1).min() >= 0.04 and changed[erased].mean(axis=1).max() <= 0.3
    for img, hit in zip(out[erased], changed[erased], strict=True):  # one rectangle, one gray level
        rows, cols = np.nonzero(hit.reshape(32, 20))
        assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)
        assert np.ptp(img[hit.reshape(32, 20, 1)]) < 1e-6
    assert train.TrainConfig("v4").config_hash() == train.TrainConfig("v4", augment={"erase_p": 0.0}).config_hash()


def augmented_alone(x: np.ndarray, key: str, value: float, seed: tuple[int, int]) -> np.ndarray:
    """``x`` through ``train.augment`` with only ``key`` on. Checks that it is seeded (the same
    seed gives the same output, the next seed another) and that the key at 0 leaves the config
    hash alone (shipped cards stay up to date)."""
    import tensorflow as tf

    off = {k: 0.0 for k in train.TrainConfig("v4").aug()}

    def run(s):
        return train.augment(tf.constant(x), tf.constant(s, tf.int64), {**off, key: value}).numpy()

    out = run(seed)
    np.testing.assert_array_equal(out, run(seed))
    assert not np.array_equal(out, run((seed[0], seed[1] + 1)))
    assert train.TrainConfig("v4").config_hash() == train.TrainConfig("v4", augment={key: 0.0}).config_hash()
    return out


def test_elastic_augmentation():
    """elastic=A bends the crop smoothly by at most A pixels, seeded, with no net shift (the
    digit's position is the tenth)."""
    ramp = np.broadcast_to((np.arange(32, dtype=np.float32) / 31)[None, :, None, None], (16, 32, 20, 1))
    out = augmented_alone(ramp, "elastic", 2.0, (7, 8))
    dy = (out - ramp) * 31  # how far up or down each pixel was read from
    assert 0.5 < np.abs(dy).max() <= 2.0 + 1e-3
    assert np.abs(dy[:, 3:29].mean(axis=(1, 2, 3))).max() < 0.3


def test_shading_augmentation():
    """shading=A multiplies each crop by a linear light ramp of at most +-A, seeded; a flat crop
    comes out as a plane (bright on one side, dark on the other) with its mean kept."""
    flat = np.full((32, 32, 20, 1), 0.5, np.float32)
    gain = augmented_alone(flat, "shading", 0.4, (5, 1))[..., 0] / 0.5 - 1.0
    assert np.abs(gain).max() <= 0.4 + 1e-4 and np.abs(gain).max(axis=(1, 2)).mean() > 0.1
    np.testing.assert_allclose(gain.mean(axis=(1, 2)), 0.0, atol=1e-4)
    rows, cols = np.meshgrid(np.arange(32), np.arange(20), indexing="ij")
    design = np.stack([rows.ravel(), cols.ravel(), np.ones(640)], axis=1)
    for g in gain:  # a plane: no residual after a least-squares fit of a + b * row + c * col
        fit = np.linalg.lstsq(design, g.ravel(), rcond=None)[0]
        assert np.abs(design @ fit - g.ravel()).max() < 1e-4


def test_line_augmentation():
    """line_p=P draws, in about a P share of the crops, one thin near-horizontal line across the
    whole width in one gray level, seeded; the other crops are untouched."""
    out = augmented_alone(np.full((64, 32, 20, 1), 0.5, np.float32), "line_p", 0.5, (9, 3))
    hit = (np.abs(out - 0.5) > 1e-3)[..., 0]  # 64 x 32 x 20
    lined = hit.any(axis=(1, 2))
    assert 16 <= lined.sum() <= 48
    for img in hit[lined]:
        rows = [np.nonzero(img[:, c])[0] for c in range(20)]
        assert all(len(r) for r in rows)  # it crosses every column
        assert max(np.ptp(r) for r in rows) <= 4  # thin: a few rows per column
        centre = [r.mean() for r in rows]
        assert abs(centre[-1] - centre[0]) <= 20 * np.tan(np.pi / 12) + 2  # within 15 degrees


def test_mixup_blends_images_and_targets_alike():
    """mixup=A blends each training image with its partner in the reversed batch by the same
    weight as its targets, the image's own label always the larger part; seeded; off at 0."""
    x, y = synthetic(64, 10, 0)
    off = {k: 0.0 for k in train.TrainConfig("v4").aug()}
    cfg = train.TrainConfig(model="v4", classes=10, epochs=1, batch=32, label_smoothing=0.0,
                            augment={**off, "mixup": 0.4})
    imgs, target = (t.numpy() for t in next(iter(train.train_dataset(x, y, cfg, 0)[0])))
    again = next(iter(train.train_dataset(x, y, cfg, 0)[0]))[0].numpy()
    np.testing.assert_array_equal(imgs, again)
    perm = np.random.default_rng([cfg.seed, 0]).permutation(64)[:32]
    own, partner = y[perm], y[perm][::-1]
    np.testing.assert_allclose(target.sum(1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(target.argmax(1), own)
    lam = target[np.arange(32), own]
    differ = own != partner
    assert (lam[differ] >= 0.5).all() and (lam[differ] < 0.95).sum() >= 4  # some images really mixed
    src = x[perm].astype(np.float32) / 255.0
    expected = lam[:, None, None, None] * src + (1 - lam[:, None, None, None]) * src[::-1]
    np.testing.assert_allclose(imgs[differ], expected[differ], atol=1e-4)
    assert train.TrainConfig("v4").config_hash() == train.TrainConfig("v4", augment={"mixup": 0.0}).config_hash()


def test_preview_aug_draws_the_recipe_and_trains_nothing(real_data, tmp_path):
    """train --preview-aug FILE.png: a montage of training crops (v15 100's recipe adds synthetic
    digits) and their augmented draws, written without training or exporting anything."""
    from PIL import Image

    from digitrec import cli

    png, out, runs = tmp_path / "aug.png", tmp_path / "out", tmp_path / "runs"
    args = ["train", "--model", "v15", "--classes", "100", "--data", str(real_data), "--limit", "300",
            "--aug", "shading=0.3", "--out", str(out), "--runs", str(runs)]
    assert train.SHIPPED_RECIPES[("v15", 100, "gray")]["synth"] > 0
    assert cli.main([*args, "--preview-aug", str(png)]) == 0
    img = np.asarray(Image.open(png).convert("L"), np.float32)
    assert img.shape[0] > 400 and img.shape[1] > 600 and img.std() > 20
    assert not out.exists() and not runs.exists()
    with pytest.raises(SystemExit, match="--preview-aug"):
        cli.main([*args[:1], "--all", *args[5:], "--preview-aug", str(png)])


def test_neighbour_label_smoothing():
    t = train.soft_labels(np.array([0, 55]), 100, 0.1).numpy()
    np.testing.assert_allclose(t.sum(axis=1), 1.0, rtol=1e-5)
    assert t[0, 0] > 0.9 and t[0, 99] == pytest.approx(t[0, 1]) and t[0, 1] > t[0, 50]


def test_qat_failure_raises():
    import tf_keras as keras

    inp = keras.Input((32, 20, 1))
    x = keras.layers.Conv2D(4, 3)(inp)
    x = keras.layers.LayerNormalization()(x)  # tfmot has no 8-bit config for it
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(10)(keras.layers.Flatten()(x))))
    with pytest.raises(RuntimeError, match="QAT of"):
        train.quantize_for_training(model)


def test_disallowed_op_is_refused_by_name(tmp_path):
    import tf_keras as keras

    from digitrec.models import qat

    inp = keras.Input((32, 20, 1))
    x = keras.layers.Conv2D(4, 3, activation="tanh")(inp)  # TANH: int8-able but not in the firmware
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(10)(keras.layers.Flatten()(x))))
    rep = np.zeros((2, 32, 20, 1), np.uint8)
    meta = {"name": "tanh_net", "classes": 10, "color": "gray"}
    with pytest.raises(export.ExportError, match="TANH"):
        export.export_model(qat.quantize(model), model, tmp_path / "m", meta, rep)
    assert not (tmp_path / "m" / "model.tflite").exists()


def test_conversion_failure_raises():
    import tensorflow as tf
    import tf_keras as keras

    class Lgamma(keras.layers.Layer):  # no int8 TFLite builtin
        def call(self, t):
            return tf.math.lgamma(t + 1.0)

    inp = keras.Input((32, 20, 1))
    x = keras.layers.Flatten()(Lgamma()(inp))
    model = keras.Model(inp, keras.layers.Softmax()(keras.layers.Dense(10)(x)))
    with pytest.raises(export.ExportError):
        export.convert_int8(model, np.zeros((2, 32, 20, 1), np.uint8))


def test_real_data_slice(tmp_path, real_data):
    splits = train.load_splits(real_data, "gray", 10, limit=512)
    for name in ("val", "test"):
        splits.x[name], splits.y[name] = splits.x[name][:128], splits.y[name][:128]
    cfg = train.TrainConfig(model="v4", classes=10, epochs=1, qat_epochs=1, batch=64, limit=512)
    card = train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    assert card["data"]["fingerprint"] == splits.info["fingerprint"] and card["data"]["train"] > 0
    data = Path(tmp_path / "out" / "10cls_GRAY" / "v4" / "model.tflite").read_bytes()
    q = preprocess.Quant(card["input"]["scale"], card["input"]["zero_point"])
    x = preprocess.to_int8(splits.x["test"][:16], q)
    diff = export.tflm_predict(data, x, card["arena_bytes"]).astype(int) - export.litert_predict(data, x).astype(int)
    assert np.abs(diff).max() <= 1


def test_repeat_folders_weights_training_images_of_a_folder(real_data, tmp_path):
    """--repeat-folder FOLDER=N: each training image of the folder (or below it, or matching a
    glob) appears N times; validation and test are untouched; a folder with no training image
    is an error that names it, and a `digitrec train` run stops on it."""
    from digitrec import cli, data

    ds = data.load_dataset(real_data, progress=False)
    split = ds.split("cluster")
    groups = sorted({ds.items[i].group for i in split["train"]})
    folder = next(g for g in groups if g.count("/") >= 3 and not any(o.startswith(g + "/") for o in groups))
    mine = [i for i in split["train"] if ds.items[i].group == folder]
    weighted, used = train.repeated_folders(ds, split, {folder + "/": 3})
    assert used == {folder + "/": {"times": 3, "images": len(mine)}}
    assert sorted(weighted["train"]) == sorted(split["train"] + 2 * mine)
    assert weighted["val"] == split["val"] and weighted["test"] == split["test"]
    parent = folder.rsplit("/", 1)[0] + "/*"  # a glob over the folder's siblings takes it too
    both, used = train.repeated_folders(ds, split, {parent: 2, folder: 4})  # the larger count wins
    assert both["train"].count(mine[0]) == 4 and used[parent]["images"] >= len(mine)
    assert train.folder_matches(folder, parent) and not train.folder_matches(folder + "x", folder)
    with pytest.raises(ValueError, match="'images/no-such-meter'"):
        train.repeated_folders(ds, split, {"images/no-such-meter": 2})
    with pytest.raises(SystemExit, match="no-such-meter"):
        cli.main(["train", "--model", "v4", "--data", str(real_data), "--repeat-folder", "images/no-such-meter=2",
                  "--out", str(tmp_path), "--runs", str(tmp_path)])
    cfg = train.TrainConfig("v4", repeat_folders={folder: 3})
    assert cfg.config_hash() != train.TrainConfig("v4").config_hash()
    # --limit counts distinct images: it subsamples before the repeats, never draws a repeat
    few = train.limited(split, 2000, seed=0)
    assert len(few["train"]) == 2000 == len(set(few["train"])) and set(few["train"]) <= set(split["train"])
    top = "/".join(folder.split("/")[:2])
    small = train.load_splits(real_data, "gray", 10, limit=2000, repeat={top: 3})
    hits = small.info["repeat_folders"][top]["images"]
    assert 0 < hits < 2000 and small.info["train"] == 2000 + 2 * hits and small.info["train_limit"] == 2000


def test_balance_folders_weights_small_folders_by_square_root(real_data):
    """--balance-folders N: an image of a folder with n < N training images is used
    round(sqrt(N / n)) times (at most BALANCE_MAX_TIMES); big folders, validation and test are
    untouched; with --repeat-folder the larger count wins; the card's data records the repeats."""
    from collections import Counter

    from digitrec import data

    ds = data.load_dataset(real_data, progress=False)
    split = ds.split("cluster")
    size = Counter(ds.items[i].group for i in split["train"])
    times = train.balance_times(ds, split["train"], 400)
    tiny = next(g for g, n in size.items() if n <= 3)  # 400 / n >= 44: capped
    mid = next(g for g, n in size.items() if 60 <= n <= 90)  # sqrt(400 / n) in 2.1 .. 2.6
    big = max(size, key=size.get)
    first = {g: next(i for i in split["train"] if ds.items[i].group == g) for g in (tiny, mid, big)}
    assert times[first[tiny]] == train.BALANCE_MAX_TIMES and times[first[mid]] == 2 and first[big] not in times
    weighted, used = train.repeated_folders(ds, split, {mid: 3}, times)
    count = Counter(weighted["train"])
    assert count[first[tiny]] == train.BALANCE_MAX_TIMES and count[first[mid]] == 3 and count[first[big]] == 1
    assert weighted["val"] == split["val"] and weighted["test"] == split["test"] and used[mid]["times"] == 3
    splits = train.load_splits(real_data, "gray", 10, limit=3000, balance=400)
    record = splits.info["balance_folders"]
    assert record["below"] == 400 and splits.info["train"] == 3000 + record["repeats"] > 3000
    # a limited list is weighted by the folders' sizes in the whole split, as a full run is
    few = train.limited(split, 3000, seed=0)["train"]
    assert record["images"] == sum(i in times for i in few) < 3000
    assert train.TrainConfig("v4", balance_folders=400).config_hash() != train.TrainConfig("v4").config_hash()


def tenths_splits() -> train.Splits:
    """Synthetic 10-class splits that also carry the tenths each digit label was rounded from."""
    from digitrec import labels

    xs, ys, ts = {}, {}, {}
    for seed, (name, n) in enumerate((("train", 384), ("val", 96), ("test", 96))):
        xs[name], ts[name] = synthetic(n, 100, seed)
        ys[name] = labels.class10_from_class100(ts[name])
    return train.Splits(xs, ys, {"fingerprint": "synthetic", "split_mode": "synthetic", "train": 384, "val": 96,
                                 "test": 96}, tenths=ts)


def test_digit_sum_head_sums_each_digits_tenths():
    import tf_keras as keras

    from digitrec import labels
    from digitrec.models import create_model

    m = create_model("dr", 10, "gray")
    tenths = keras.Model(m.input, train.tenths_output(m))
    x = np.random.default_rng(0).random((4, 32, 20, 1)).astype("float32")
    p10, p100 = m.predict(x, verbose=0), tenths.predict(x, verbose=0)
    digit = labels.class10_from_class100(np.arange(100))
    expected = np.stack([p100[:, digit == d].sum(axis=1) for d in range(10)], axis=1)
    np.testing.assert_allclose(p10, expected, atol=1e-6)
    assert not m.get_layer("digit_sum").trainable_weights  # the sum is fixed, never learned


def test_tenths_targets_follow_the_digit_targets():
    x, y100 = synthetic(64, 100, 0)
    from digitrec import labels

    y = labels.class10_from_class100(y100)
    cfg = train.TrainConfig(model="dr", classes=10, epochs=1, batch=16, tenths_weight=1.0, augment={"rotate_deg": 0.0})
    ds, _ = train.train_dataset(x, y, cfg, 0, tenths=y100)
    perm = np.random.default_rng([cfg.seed, 0]).permutation(64)[:16]
    _, target = next(iter(ds))
    target = target.numpy()
    assert target.shape == (16, 110)
    np.testing.assert_array_equal(target[:, :10].argmax(1), y[perm])
    np.testing.assert_array_equal(target[:, 10:].argmax(1), y100[perm])
    np.testing.assert_allclose(target[:, 10:].sum(1), 1.0, atol=1e-6)


def test_tenths_weight_needs_a_digit_sum_head():
    from digitrec.models import create_model

    cfg = train.TrainConfig(model="v4", classes=10, tenths_weight=1.0)
    with pytest.raises(ValueError, match="no digit-sum head"):
        train.training_view(create_model("v4", 10, "gray"), cfg)
    assert train.training_view(create_model("v4", 10, "gray"), train.TrainConfig(model="v4")).name == "v4"
    assert train.TrainConfig("dr", tenths_weight=1.0).config_hash() != train.TrainConfig("dr").config_hash()


def test_digit_weight_weighs_the_digit_columns_only():
    """digit_weight 0 leaves the tenths cross-entropy alone: wrong digit columns cost nothing."""
    import tensorflow as tf

    y_true = np.zeros((2, 110), np.float32)
    y_true[:, 3], y_true[:, 10 + 34] = 1.0, 1.0
    y_pred = np.full((2, 110), 0.01, np.float32)
    y_pred[:, 7], y_pred[:, 10 + 34] = 0.91, 0.01 + 0.9  # digit wrong, tenth right
    losses = {}
    for w in (0.0, 1.0):
        loss, _ = train._loss_and_metric(train.TrainConfig("dr", tenths_weight=1.0, digit_weight=w))
        losses[w] = float(loss(tf.constant(y_true), tf.constant(y_pred)))
    tenths_ce = -np.log(0.91 / (0.01 * 99 + 0.91))
    assert losses[0.0] == pytest.approx(tenths_ce, rel=1e-4)
    assert losses[1.0] > losses[0.0] + 3.0  # the wrong digit now costs about -log(0.01)


def test_digit_weight_needs_tenths_supervision():
    from digitrec.models import create_model

    with pytest.raises(ValueError, match="needs tenths_weight"):
        train.training_view(create_model("dr", 10, "gray"), train.TrainConfig("dr", digit_weight=0.0))
    with pytest.raises(ValueError, match="must not be negative"):
        train.training_view(create_model("dr", 10, "gray"), train.TrainConfig("dr", tenths_weight=1.0, digit_weight=-1))
    base = train.TrainConfig("dr", tenths_weight=1.0)
    assert train.TrainConfig("dr", tenths_weight=1.0, digit_weight=1.0).config_hash() == base.config_hash()
    assert train.TrainConfig("dr", tenths_weight=1.0, digit_weight=0.0).config_hash() != base.config_hash()


def test_tenths_supervised_run_exports_a_digit_model(tmp_path):
    """Tiny dr 10 run with tenths supervision and synthetic digits: a 10-class int8 model whose
    output is a probability on the fixed [0, 1] scale, TFLM within 1 LSB of LiteRT."""
    splits = tenths_splits()
    cfg = train.TrainConfig(model="dr", classes=10, epochs=2, qat_epochs=1, batch=64, tenths_weight=1.0, synth=0.5)
    card = train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    assert card["classes"] == 10 and card["training"]["tenths_weight"] == 1.0
    assert card["training"]["synth"]["images"] == 192 and card["data"]["train"] == 384  # real images counted apart
    assert card["output"]["shape"] == [10] and card["output"]["zero_point"] == -128
    assert card["output"]["scale"] == pytest.approx(1 / 255)
    log = (tmp_path / "out" / "10cls_GRAY" / "dr" / "training_log.csv").read_text().splitlines()
    assert "val_accuracy" in log[0].split(",") and len(log) == 4  # header, 2 float + 1 QAT epochs
    data = (tmp_path / "out" / "10cls_GRAY" / "dr" / "model.tflite").read_bytes()
    q = preprocess.Quant(card["input"]["scale"], card["input"]["zero_point"])
    x = preprocess.to_int8(splits.x["test"][:16], q)
    # against LiteRT's reference kernels: dr's depthwise convolutions round differently in LiteRT's
    # optimized kernels, and its fixed digit-sum layer adds ten such scores, so against those a tiny
    # model's scores can differ by 2 LSB (docs/device.md, "Two PC answers")
    diff = export.tflm_predict(data, x, card["arena_bytes"]).astype(int) - export.litert_predict(data, x, reference=True).astype(int)
    assert np.abs(diff).max() <= 1


@pytest.mark.parametrize(("patience_after", "stops_at"), [(0.0, 3), (0.5, 5)])
def test_early_stopping_waits_for_patience_after(tmp_path, patience_after, stops_at):
    """Validation accuracy that only falls: patience 2 stops after epoch 3, unless early stopping
    is held off until half of the 10 epochs are done."""
    import tensorflow as tf
    import tf_keras as keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    cfg = train.TrainConfig(model="x", patience=2, patience_after=patience_after)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(tmp_path / "ckpt"), max_to_keep=1)
    state: dict = {}
    cb = train._make_callback(model, tmp_path, cfg.patience, state, manager, train.first_stop_epoch(cfg, 10))
    cb.set_model(model)
    model.stop_training = False
    epoch = 0
    while not model.stop_training and epoch < 10:
        cb.on_epoch_begin(epoch)
        cb.on_epoch_end(epoch, {"val_accuracy": 0.9 - 0.01 * epoch})
        epoch += 1
    assert epoch == stops_at and state["best_epoch"] == 1
    assert (train.TrainConfig("dr", patience_after=0.5).config_hash() != train.TrainConfig("dr").config_hash())


def test_distillation_targets_mix_teacher_and_labels():
    x, y = synthetic(64, 10, 0)
    teacher = np.random.default_rng(0).dirichlet(np.ones(10), 64).astype(np.float32)
    cfg = train.TrainConfig(model="v4", classes=10, epochs=1, batch=16, label_smoothing=0.0, kd_alpha=0.25,
                            teachers=("t",), augment={"rotate_deg": 0.0})
    ds, steps = train.train_dataset(x, y, cfg, 0, teacher)
    perm = np.random.default_rng([cfg.seed, 0]).permutation(64)[:16]
    _, target = next(iter(ds))
    expected = 0.75 * np.eye(10)[y[perm]] + 0.25 * teacher[perm]
    np.testing.assert_allclose(target.numpy(), expected, atol=1e-6)


def test_teacher_probabilities_from_shipped_models(real_data):
    """A shipped 100-class model teaches a 10-class student: tenths summed into digit bins."""
    from digitrec.bench import MODELS_DIR

    splits = train.load_splits(real_data, "gray", 10, limit=256)
    x, y, info = splits.x["train"], splits.y["train"], splits.info
    p = train.teacher_probabilities(("100cls_GRAY/v16",), x, 10, "gray", info, MODELS_DIR)
    assert p.shape == (len(x), 10)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.mean(p.argmax(axis=1) == y) > 0.9
    with pytest.raises(ValueError, match="cannot teach"):
        train.teacher_probabilities(("10cls_GRAY/v4",), x, 100, "gray", info, MODELS_DIR)
    with pytest.raises(ValueError, match="another data version"):
        train.teacher_probabilities(("10cls_GRAY/v4",), x, 10, "gray", {**info, "fingerprint": "x"}, MODELS_DIR)
    with pytest.raises(ValueError, match="colour"):
        train.teacher_probabilities(("10cls_GRAY/v4",), x, 10, "rgb", info, MODELS_DIR)


@pytest.mark.parametrize("key", train.zoo())
def test_shipped_models_are_up_to_date(key):
    """Every shipped card was made by the current training code and its recipe: `train --all` sees it
    as up to date (recipe extras such as teachers and augmentation included)."""
    from digitrec.bench import MODELS_DIR
    from digitrec.cli import build_parser

    model, classes, color = key
    card = json.loads((Path(MODELS_DIR) / f"{classes}cls_{color.upper()}" / model / "card.json").read_text())
    argv = ["train", "--model", model, "--classes", str(classes), "--color", color]
    cfg = train.config_from_args(build_parser().parse_args(argv), model, classes, color)
    assert cfg.teachers == tuple(card["training"].get("teachers", ()))  # older cards predate teachers
    assert cfg.aug().items() >= card["training"]["augment"].items()  # older cards lack keys added later
    assert cfg.config_hash() == card["config_hash"]


def test_teacher_none_and_its_misuse():
    from digitrec.cli import build_parser

    argv = ["train", "--model", "dr", "--classes", "100", "--color", "gray"]
    default = train.config_from_args(build_parser().parse_args(argv), "dr", 100, "gray")
    plain = train.config_from_args(build_parser().parse_args([*argv, "--teacher", "none"]), "dr", 100, "gray")
    assert default.teachers and plain.teachers == () and plain.config_hash() != default.config_hash()
    with pytest.raises(SystemExit, match="cannot be combined"):
        train.config_from_args(build_parser().parse_args([*argv, "--teacher", "none", "100cls_GRAY/v16"]),
                               "dr", 100, "gray")


def test_train_all_covers_exactly_the_shipped_models():
    """`train --all` trains what exported_models/ ships: nothing missing, nothing unshipped."""
    from digitrec.bench import MODELS_DIR

    shipped = {(p.parent.name, p.parent.parent.name) for p in Path(MODELS_DIR).glob("*/*/card.json")}
    assert {(m, f"{c}cls_{color.upper()}") for m, c, color in train.zoo()} == shipped


def test_qat_dropout_runs_keep_their_version_1_hash(monkeypatch):
    """Keeping Dropout in QAT is what training code version 1 did, so such recipes match older cards."""
    kept = train.TrainConfig("v4", qat_dropout=True).config_hash()
    left_out = train.TrainConfig("v4").config_hash()
    monkeypatch.setattr(train, "CODE_VERSION", 1)
    assert kept == train.TrainConfig("v4").config_hash() != left_out


@pytest.mark.parametrize("qat_dropout", [False, True])
def test_run_reloads_for_re_export(tmp_path, qat_dropout, request):
    """`digitrec export --run` rebuilds the QAT model a run saved, Dropout left out or kept as the
    run's record says (a version-1 record, without the keys, kept it), and converts it to what
    `train` exported."""
    if qat_dropout:
        splits, root = synthetic_splits(), tmp_path
        cfg = train.TrainConfig(model="v4", classes=10, epochs=1, qat_epochs=1, batch=64, qat_dropout=True)
        card = train.train_model(cfg, splits, root / "out", root / "runs")
        run = root / "runs" / "10cls_GRAY" / "v4"
        record = json.loads((run / "record.json").read_text())
        del record["training"]["code_version"], record["training"]["qat_dropout"]  # as version 1 wrote it
        (run / "record.json").write_text(json.dumps(record))
    else:  # the module's run, its Dropout left out
        out, card, splits = request.getfixturevalue("exported")
        root = out.parents[2]
        run = root / "runs" / "10cls_GRAY" / "v4"
        assert card["training"]["qat_dropout"] is False
    qmodel, _, _ = export.load_run(run)
    again = export.convert_int8(qmodel, export.representative_subset(splits.x["train"], 500, card["training"]["seed"]))
    exported = (root / "out" / "10cls_GRAY" / "v4" / "model.tflite").read_bytes()
    iq, _ = export.io_quant(exported)
    x = preprocess.to_int8(splits.x["test"], preprocess.Quant(iq["scale"], iq["zero_point"]))
    diff = export.litert_predict(again, x).astype(int) - export.litert_predict(exported, x).astype(int)
    assert np.abs(diff).max() <= 1


def _interrupt_at(monkeypatch, phase: str, epoch: int) -> None:
    """Ctrl-C as ``phase`` starts ``epoch`` (0-based), after the checkpoints of the epochs before."""
    make = train._make_callback

    def wrapped(model, phase_dir, *args, **kwargs):
        cb = make(model, phase_dir, *args, **kwargs)
        begin = cb.on_epoch_begin

        def on_epoch_begin(e, logs=None):
            if Path(phase_dir).name == phase and e == epoch:
                raise KeyboardInterrupt
            begin(e, logs)

        cb.on_epoch_begin = on_epoch_begin
        return cb

    monkeypatch.setattr(train, "_make_callback", wrapped)


def _log_epochs(phase_dir: Path) -> list[int]:
    import csv

    with (phase_dir / "log.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


def test_interrupted_run_resumes_where_it_stopped(tmp_path, monkeypatch, capsys):
    """Stopped in the float phase's third epoch, then again in QAT's second, the same command
    carries on from the last checkpoint each time: no epoch runs twice, none is skipped."""
    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=3, qat_epochs=2, batch=64)
    run = tmp_path / "runs" / "10cls_GRAY" / "v4"
    for phase, epoch in (("float", 2), ("qat", 1)):
        with monkeypatch.context() as m:
            _interrupt_at(m, phase, epoch)
            with pytest.raises(KeyboardInterrupt):
                train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
        assert _log_epochs(run / phase) == list(range(epoch))
    card = train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    assert f"resuming {run / 'qat'} at epoch 1" in capsys.readouterr().out
    assert _log_epochs(run / "float") == [0, 1, 2] and _log_epochs(run / "qat") == [0, 1]
    assert card["training"]["epochs"] == 3 and card["training"]["qat_epochs"] == 2
    assert not list(run.glob("*.superseded-*"))


def test_a_kill_between_checkpoint_and_state_resumes_from_the_state(tmp_path, monkeypatch, capsys):
    """Killed after the float phase's second checkpoint but before its state.json, the run
    resumes from the checkpoint the state names and trains the second epoch again: the optimizer
    ends three epochs of steps on, not four, and the log row that epoch wrote before the kill is
    replaced, not repeated."""
    import tensorflow as tf

    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=3, qat_epochs=1, batch=64)
    ckpt_dir = tmp_path / "runs" / "10cls_GRAY" / "v4" / "float" / "ckpt"
    write = train._write_json

    def killed_before_state_of_epoch_2(path: Path, doc: dict) -> None:
        if Path(path).name == "state.json" and Path(path).parent.name == "float" and doc.get("epoch") == 2:
            raise KeyboardInterrupt
        write(path, doc)

    with monkeypatch.context() as m:
        m.setattr(train, "_write_json", killed_before_state_of_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    steps = tf.train.load_variable(str(ckpt_dir / "ckpt-1"), "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE")
    assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith("ckpt-2") and steps > 0
    assert _log_epochs(ckpt_dir.parent) == [0, 1]  # logged before its state.json
    train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    assert f"resuming {ckpt_dir.parent} at epoch 1" in capsys.readouterr().out
    assert _log_epochs(ckpt_dir.parent) == [0, 1, 2]
    last = tf.train.latest_checkpoint(str(ckpt_dir))
    assert last.endswith("ckpt-3")
    assert tf.train.load_variable(last, "optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == 3 * steps
    with pytest.raises(RuntimeError, match="no checkpoint of it"):
        train.checkpoint_of_epoch(tf.train.CheckpointManager(tf.train.Checkpoint(), str(ckpt_dir), 2), 1,
                                  ckpt_dir.parent)


def test_options_added_later_keep_the_identity_of_runs_from_before():
    """A run checkpointed before an option existed still resumes after the upgrade: at its default
    the option stays out of the phase identity (the values are what the code of 0df0c37, before
    --aug mixup and --synth-tenths, computed); set, it is part of it."""
    info = {"fingerprint": "f63f433954e5b647", "split_mode": "cluster"}
    v4 = train.TrainConfig("v4")
    v15 = train.TrainConfig("v15", classes=100, synth=1.0, synth_fonts="more")
    assert train.phase_identity(v4, info, {}, "float") == "2d5eb582fdb4a6fb"
    assert train.phase_identity(v15, info, {}, "qat") == "15e07ed90dcd4b57"
    assert train.phase_identity(replace(v4, augment={"mixup": 0.2}), info, {}, "float") != "2d5eb582fdb4a6fb"
    assert train.phase_identity(replace(v15, synth_tenths="clear"), info, {}, "qat") != "15e07ed90dcd4b57"


def test_another_config_never_resumes_a_run(tmp_path):
    """A changed QAT setting re-runs QAT on the finished float phase; a changed float setting
    (here the training-set size) or data split starts afresh. The phases left behind are moved
    aside, not deleted."""
    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=1, qat_epochs=1, batch=64)
    run = tmp_path / "runs" / "10cls_GRAY" / "v4"
    train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    first_float = (run / "float" / "state.json").read_text()

    card = train.train_model(replace(cfg, qat_epochs=2), splits, tmp_path / "out", tmp_path / "runs")
    assert (run / "float" / "state.json").read_text() == first_float  # reused, not retrained
    assert card["training"]["qat_epochs"] == 2 and _log_epochs(run / "qat") == [0, 1]
    assert len(list(run.glob("qat.superseded-*"))) == 1 and not list(run.glob("float.superseded-*"))

    smaller = train.Splits({k: v[:320] if k == "train" else v for k, v in splits.x.items()},
                           {k: v[:320] if k == "train" else v for k, v in splits.y.items()},
                           {**splits.info, "train": 320})
    train.train_model(cfg, smaller, tmp_path / "out", tmp_path / "runs")
    assert len(list(run.glob("float.superseded-*"))) == 1 and len(list(run.glob("qat.superseded-*"))) == 2
    assert json.loads((run / "config.json").read_text())["data"]["train"] == 320


def test_teacher_files_are_named_and_checked(tmp_path):
    """A distilled student's identity and card carry its teachers' SHA-256; a missing teacher is
    an error naming it."""
    from digitrec.bench import MODELS_DIR

    shas = train.teacher_files(("100cls_GRAY/v16",), MODELS_DIR)
    tflite = Path(MODELS_DIR) / "100cls_GRAY/v16/model.tflite"
    assert shas == {"100cls_GRAY/v16": hashlib.sha256(tflite.read_bytes()).hexdigest()}
    cfg = train.TrainConfig("dr", teachers=("100cls_GRAY/v16",))
    info = {"fingerprint": "f"}
    assert train.phase_identity(cfg, info, shas, "float") != train.phase_identity(cfg, info, {"100cls_GRAY/v16": "0"}, "float")
    with pytest.raises(ValueError, match="10cls_GRAY/nope"):
        train.teacher_files(("10cls_GRAY/nope",), MODELS_DIR)


def test_train_all_notes_a_student_whose_teacher_changed(tmp_path):
    models = tmp_path / "models"
    teacher = models / "100cls_GRAY" / "t" / "model.tflite"
    teacher.parent.mkdir(parents=True)
    teacher.write_bytes(b"teacher v1")
    student = models / "10cls_GRAY" / "dr"
    student.mkdir(parents=True)
    cfg = train.TrainConfig("dr", teachers=("100cls_GRAY/t",))
    card = {"training": {"teacher_sha256": train.teacher_files(cfg.teachers, models)}}
    (student / "card.json").write_text(json.dumps(card))
    assert train.changed_teachers(models, cfg, models) == []
    teacher.write_bytes(b"teacher v2")
    assert train.changed_teachers(models, cfg, models) == ["100cls_GRAY/t"]
    teacher.unlink()
    assert train.changed_teachers(models, cfg, models) == ["100cls_GRAY/t"]


def test_qat_can_start_from_the_last_float_epoch(tmp_path):
    """``float_weights="last"`` reuses the finished float phase (same identity) and starts QAT
    from its last epoch's checkpoint instead of the best validation epoch's weights."""
    import tensorflow as tf

    from digitrec.models import create_model

    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=3, qat_epochs=1, batch=64)
    run = tmp_path / "runs" / "10cls_GRAY" / "v4"
    train.train_model(cfg, splits, tmp_path / "out", tmp_path / "runs")
    create_model("v4", 10, "gray").save_weights(str(run / "float" / "best.weights.h5"))  # as if epoch 1 had won
    card = train.train_model(replace(cfg, float_weights="last"), splits, tmp_path / "out", tmp_path / "runs")
    assert not list(run.glob("float.superseded-*")) and card["training"]["float_weights"] == "last"
    assert card["training"]["val_accuracy_float"] == train.last_logged(run / "float", "val_accuracy")
    last, used, best = (create_model("v4", 10, "gray") for _ in range(3))
    tf.train.Checkpoint(model=last).restore(tf.train.latest_checkpoint(str(run / "float" / "ckpt"))).expect_partial()
    used.load_weights(str(run / "float.weights.h5"))
    best.load_weights(str(run / "float" / "best.weights.h5"))
    for a, b in zip(last.get_weights(), used.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(best.get_weights()[0], used.get_weights()[0])
    assert train.TrainConfig("v4", float_weights="last").config_hash() != train.TrainConfig("v4").config_hash()


def test_weight_average_is_validated_checkpointed_and_kept(tmp_path, monkeypatch, capsys):
    """With ``ema`` the float phase validates, checkpoints and keeps the moving average of its
    weights; the raw weights ride along in the checkpoint, and a resumed run trains on from them."""
    import tensorflow as tf

    from digitrec.models import create_model

    splits = synthetic_splits()
    cfg = train.TrainConfig(model="v4", classes=10, epochs=3, batch=64, ema=0.9)
    phase = tmp_path / "float"
    with monkeypatch.context() as m:
        _interrupt_at(m, "float", 2)
        with pytest.raises(KeyboardInterrupt):
            train.run_phase(create_model("v4", 10, "gray"), splits, cfg, phase, cfg.lr, 3, "id", "last", cfg.ema)
    ckpt = tf.train.latest_checkpoint(str(phase / "ckpt"))
    kernel = "model/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    first = tf.train.load_variable(ckpt, kernel)
    np.testing.assert_array_equal(first, tf.train.load_variable(ckpt, "weight_average/average/0/.ATTRIBUTES/VARIABLE_VALUE"))
    raw = tf.train.load_variable(ckpt, "weight_average/raw/0/.ATTRIBUTES/VARIABLE_VALUE")
    assert not np.array_equal(first, raw)
    resumed = create_model("v4", 10, "gray")
    average = train.weight_average(resumed, cfg.ema)
    tf.train.Checkpoint(model=resumed, weight_average=average.checkpoint).restore(ckpt).expect_partial()
    average.swap_out()
    np.testing.assert_array_equal(resumed.weights[0].numpy(), raw)

    model = create_model("v4", 10, "gray")
    state = train.run_phase(model, splits, cfg, phase, cfg.lr, 3, "id", "last", cfg.ema)
    assert f"resuming {phase} at epoch 2" in capsys.readouterr().out and state["epoch"] == 3
    last = tf.train.latest_checkpoint(str(phase / "ckpt"))
    np.testing.assert_array_equal(model.weights[0].numpy(),
                                  tf.train.load_variable(last, "weight_average/average/0/.ATTRIBUTES/VARIABLE_VALUE"))
    assert tf.train.load_variable(last, "weight_average/steps/.ATTRIBUTES/VARIABLE_VALUE") == 3 * 6
    with pytest.raises(ValueError, match="ema 1.0"):
        train.weight_average(model, 1.0)
    assert train.TrainConfig("v4", ema=0.999).config_hash() != train.TrainConfig("v4").config_hash()
