"""The data stage on folders the tests build, and the no-leak guarantee on the real data."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import digit_image, near_copy, save
from digitrec import cli, data, preprocess


def sides(ds: data.Dataset, mode: str = "cluster") -> dict[str, str]:
    return {ds.items[i].path: side for side, idx in ds.split(mode).items() for i in idx}


def test_junk_and_bad_files_are_reported_not_fatal(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=1, per_meter=5)
    meter = root / "images" / "meter0"
    (meter / "desktop.ini").write_text("[.ShellClassInfo]")
    (meter / "archive.zip").write_bytes(b"PK\x03\x04junk")
    (meter / "3.4_empty.jpg").write_bytes(b"")
    good = save(tmp_path / "full.jpg", digit_image(99))
    (meter / "5.0_truncated.jpg").write_bytes(good.read_bytes()[:60])
    (meter / "6.0_garbage.png").write_bytes(b"not a png at all")
    save(meter / "NaN_1_digit2.png", digit_image(7))
    save(meter / "10_x.png", digit_image(8))
    save(meter / "12.5_x.png", digit_image(9))
    save(meter / "2-1.png", digit_image(10))

    ds = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    reasons = {Path(s["path"]).name: s["reason"] for s in ds.skipped}
    assert len(ds.usable) == 5
    assert "not an image file" in reasons["desktop.ini"]
    assert "not an image file" in reasons["archive.zip"]
    assert "empty file" in reasons["3.4_empty.jpg"]
    assert "undecodable" in reasons["5.0_truncated.jpg"]
    assert "undecodable" in reasons["6.0_garbage.png"]
    assert "N prefix" in reasons["NaN_1_digit2.png"]
    assert "10_ prefix" in reasons["10_x.png"]
    assert "out of range" in reasons["12.5_x.png"]
    assert "no parseable label" in reasons["2-1.png"]
    assert len(ds.skipped) == 9


def test_duplicates_collapse_and_conflicts_are_excluded(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=2, per_meter=10)
    a = root / "images" / "meter0"
    first = sorted(a.glob("*.png"))[0]
    # same bytes in a copied folder, same pixels in another encoding, and a label conflict
    copy_dir = root / "images" / "meter0_copy"
    copy_dir.mkdir()
    shutil.copy(first, copy_dir / first.name)
    img = preprocess.decode_rgb(first)
    save(root / "images" / "meter1" / (first.name.split("_")[0] + "_as_bmp.bmp"), img)
    conflict_src = sorted(a.glob("*.png"))[1]
    value = float(conflict_src.name.split("_")[0])
    shutil.copy(conflict_src, copy_dir / f"{(value + 0.3) % 10:.1f}_relabelled.png")

    ds = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    report = data.duplicate_report(ds.items)
    assert report["duplicate_groups"] == 2
    assert report["byte_identical_groups"] == 2  # the copy and the relabelled copy
    assert report["conflicting_groups"] == 1
    conflicted = {Path(f["path"]).name for f in report["conflicting_files"]}
    assert conflicted == {conflict_src.name, f"{(value + 0.3) % 10:.1f}_relabelled.png"}
    split = sides(ds)
    assert all(split[f["path"]] == "excluded" for f in report["conflicting_files"])
    kept = [it for it in ds.items if it.pixel_hash == ds.items[0].pixel_hash or it.path.endswith(first.name)]
    assert sum(it.status == "ok" for it in kept) == 1
    assert len(ds.usable) == 20 - 1  # the conflicting original is excluded; copies collapsed


def test_near_copies_stay_on_one_side(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=3, per_meter=30)
    base = digit_image(4242)
    for k in range(12):  # a burst of consecutive frames of one reading
        save(root / "images" / "meter1" / f"3.3_burst{k}.png", near_copy(base, k))
    ds = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    split = sides(ds)
    burst = {split[p] for p in split if "burst" in p}
    assert len(burst) == 1
    clusters = {it.cluster for it in ds.items if "burst" in it.path}
    assert len(clusters) == 1
    # distinct random images are not merged
    assert len({it.cluster for it in ds.items if "burst" not in it.path}) == 90


def test_split_is_deterministic_and_stable_when_images_are_added(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=4, per_meter=40)
    before = sides(data.load_dataset(root, cache_dir=tmp_path / "c1", progress=False))
    again = sides(data.load_dataset(root, cache_dir=tmp_path / "c2", progress=False))
    assert before == again
    assert {"train", "val", "test"} <= set(before.values())
    make_dataset(meters=2, per_meter=40, root=root, seed0=50)  # new meters arrive
    after = sides(data.load_dataset(root, cache_dir=tmp_path / "c1", progress=False))
    assert len(after) == len(before) + 80
    assert all(after[p] == side for p, side in before.items())
    group_before = sides(data.load_dataset(root, progress=False, cache_dir=tmp_path / "c1"), "group")
    by_group: dict[str, set[str]] = {}
    for p, side in group_before.items():
        by_group.setdefault(p.rsplit("/", 1)[0], set()).add(side)
    assert all(len(s) == 1 for s in by_group.values())


def test_meter_mode_holds_out_whole_meters_without_chaining_through_collections(make_dataset, tmp_path: Path) -> None:
    """A copied folder stays with its meter; a collection holding a few frames of many meters
    does not chain them into one unit (as group mode does); no held-out image has a near-copy
    on another side."""
    root = make_dataset(meters=16, per_meter=8)
    images = root / "images"
    for f in sorted((images / "meter3").iterdir()):  # a re-exported copy of one meter's folder
        save(images / "meter3_copy" / f.name, near_copy(np.asarray(Image.open(f)), 1))
    for m in range(4, 16):  # a collection: two frames of each of 12 meters, and its own images
        for f in sorted((images / f"meter{m}").iterdir())[:2]:
            value, name = f.name.split("_", 1)
            save(images / "collection" / f"{value}_m{m}_{name}", near_copy(np.asarray(Image.open(f)), 2))
    for k in range(20):
        save(images / "collection" / f"{k % 10}.0_own{k}.png", digit_image(70_000 + k))
    ds = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)

    def side_of_folder(mode: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for p, side in sides(ds, mode).items():
            if side != "excluded":
                out.setdefault(p.rsplit("/", 1)[0], set()).add(side)
        return out

    meter = side_of_folder("meter")
    assert all(len(s) == 1 for s in meter.values())  # whole folders
    assert meter["images/meter3"] == meter["images/meter3_copy"]
    linked = [f"images/meter{m}" for m in range(4, 16)]
    assert len(set().union(*(side_of_folder("group")[f] for f in linked))) == 1  # chained into one unit
    assert len(set().union(*(meter[f] for f in linked))) > 1  # held out meter by meter
    split = ds.split("meter")
    side = {i: s for s, idx in split.items() for i in idx}
    for s in ("val", "test"):
        for i in split[s]:
            others = {side[j] for j in ds.usable if ds.items[j].cluster == ds.items[i].cluster}
            assert others == {s}, ds.items[i].path


def test_cache_is_reused_and_arrays_match_preprocessing(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=2, per_meter=10)
    first = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    second = data.load_dataset(root, cache_dir=tmp_path / "cache", progress=False)
    assert first.from_cache == 0 and second.from_cache == 20
    assert np.array_equal(first.gray, second.gray) and np.array_equal(first.rgb, second.rgb)
    i = 3
    expected = preprocess.prepare(preprocess.decode_rgb(root / first.items[i].path), "gray")
    x, y, paths = second.arrays([i], "gray", 100)
    assert np.array_equal(x[0], expected)
    assert y[0] == first.items[i].class100 and paths == [first.items[i].path]


def test_stats_and_split_commands(make_dataset, tmp_path: Path) -> None:
    root = make_dataset(meters=3, per_meter=20)
    (root / "images" / "desktop.ini").write_text("x")
    out = tmp_path / "stats.json"
    assert cli.main(["data", "stats", "--data", str(root), "--json", str(out), "--quiet",
                     "--cache", str(tmp_path / "c")]) == 0
    s = json.loads(out.read_text())
    for key in ("images", "skipped", "skipped_files", "duplicate_groups", "conflicting_groups",
                "per_class_10", "per_class_100", "groups", "splits"):
        assert key in s
    assert s["images"] == 60 and s["skipped"] == 1 and s["groups"] == 3
    assert sum(s["per_class_10"].values()) == 60 and len(s["per_class_100"]) == 100
    assert sum(s["splits"].values()) == 60
    assert (tmp_path / "stats_montage.png").stat().st_size > 1000
    split_file = tmp_path / "split.json"
    assert cli.main(["data", "split", "--data", str(root), "--out", str(split_file), "--quiet",
                     "--cache", str(tmp_path / "c")]) == 0
    doc = json.loads(split_file.read_text())
    assert sorted(doc["train"] + doc["val"] + doc["test"]) == sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert doc["excluded"] == []


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    try:
        data.load_dataset(tmp_path / "nope", progress=False)
    except FileNotFoundError as exc:
        assert "nope" in str(exc)
    else:
        raise AssertionError("expected FileNotFoundError")


def test_no_leak_on_real_data(real_data: Path) -> None:
    ds = data.load_dataset(real_data, progress=False)
    split = ds.split("cluster")
    assert len(ds.usable) > 20000 and len(split["test"]) > 2000
    side_of = {i: side for side, idx in split.items() for i in idx}
    # no identical image (bytes or pixels) on two sides
    for attr in ("sha256", "pixel_hash"):
        seen: dict[str, str] = {}
        for i in ds.usable:
            key = getattr(ds.items[i], attr)
            assert seen.setdefault(key, side_of[i]) == side_of[i]
    # no near-identical image on two sides: test vs train, same or adjacent tenth
    vec = data._normalized(ds.gray)
    c100 = np.array([it.class100 for it in ds.items])
    group = np.array([it.group for it in ds.items])
    test_idx, train_idx = np.array(split["test"]), np.array(split["train"] + split["val"])
    for c in range(100):
        a = test_idx[c100[test_idx] == c]
        b = train_idx[np.isin(c100[train_idx], [c, (c + 1) % 100, (c - 1) % 100])]
        if len(a) == 0 or len(b) == 0:
            continue
        sim = vec[a] @ vec[b].T
        same = group[a][:, None] == group[b][None, :]
        limit = np.where(same, data.NEAR_DUP_SAME_FOLDER, data.NEAR_DUP_OTHER_FOLDER)
        assert not (sim >= limit).any(), f"near-copy across the split in class {c}"


def test_stats_time_loads_decodes_into_an_empty_cache_and_leaves_the_users_alone(make_dataset, tmp_path: Path,
                                                                                 capsys) -> None:
    root = make_dataset(meters=2, per_meter=10)
    (root / "images" / "meter0" / "3.0_broken.jpg").write_bytes(b"not a jpeg")
    users = tmp_path / "user-cache"
    out = tmp_path / "stats.json"
    assert cli.main(["data", "stats", "--data", str(root), "--cache", str(users), "--json", str(out),
                     "--time-loads", "--quiet"]) == 0
    s = json.loads(out.read_text())
    t = s["load_timing"]
    assert t["files"] == 21 and t["workers"] == 1  # the broken file is decoded too; so few need no pool
    assert t["first_s"] >= t["cached_s"] >= 0  # decoding costs more than reading the cache back
    assert s["from_cache"] == 21 and s["images"] == 20  # the stats are the cached load's
    assert not users.exists()  # --time-loads loads through its own temporary cache
    assert "load timing    first" in capsys.readouterr().out


def test_real_data_cached_load_is_fast(real_data: Path) -> None:
    data.load_dataset(real_data, progress=False)  # fills the cache if needed
    # CPU time, not wall time: a busy machine (training in the background) must not fail this.
    # Decoding the 25.7k files costs about 12 s of CPU on the CI machine, a cached load about 2 s;
    # the same machine's CPU speed varies up to 3x from day to day, so the budget is relative:
    # a cached load costs less than a third of decoding every file, timed on a sample here.
    t0 = time.process_time()
    ds = data.load_dataset(real_data, progress=False)
    cached_s = time.process_time() - t0
    assert ds.from_cache == len(ds.items)
    sample = ds.items[:: max(1, len(ds.items) // 1500)]
    t0 = time.process_time()
    for item in sample:
        data._decode_one((str(real_data), item.path))
    decode_all_s = (time.process_time() - t0) / len(sample) * len(ds.items)
    assert cached_s < decode_all_s / 3, f"cached load {cached_s:.1f} s CPU, decoding all {decode_all_s:.1f} s"


def test_cache_writes_from_concurrent_loads_do_not_collide(tmp_path: Path) -> None:
    """Two trainings started together both write the cache; neither may fail or leave a temp file."""
    keys = [(f"a/{k}.jpg", 10, 1) for k in range(4)]
    g = np.zeros((32, 20, 1), np.uint8)
    entries = [(None, f"sha{k}", f"pix{k}", g + k, np.repeat(g + k, 3, axis=2), None) for k in range(4)]
    path = tmp_path / "data-x.npz"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: data._write_cache(path, keys, entries), range(16)))
    assert [p.name for p in tmp_path.iterdir()] == ["data-x.npz"]
    assert data._read_cache(path)[keys[3]][3][0, 0, 0] == 3


def test_label_consistency_of_near_identical_frames() -> None:
    """Twins in one folder: 4.4/4.5 disagree on the digit at the boundary; 2.0/2.0 agree."""
    r = np.random.default_rng(0)
    base_a, base_b, other = (r.integers(0, 255, (32, 20, 1)) for _ in range(3))
    imgs = [base_a, base_a + r.integers(0, 3, base_a.shape), base_b, base_b + 1, other]
    specs = [("m1", 4.4), ("m1", 4.5), ("m2", 2.0), ("m2", 2.0), ("m3", 7.0)]
    items = [data.Item(f"{g}/{v}_{k}.jpg", g, v, str(k), str(k)) for k, (g, v) in enumerate(specs)]
    gray = np.clip(np.stack(imgs), 0, 255).astype(np.uint8)
    ds = data.Dataset(Path("."), items, gray, np.repeat(gray, 3, axis=3), [])
    lc = data.label_consistency(ds)
    assert lc["twins"] == 4  # the lone image in m3 has no partner
    assert lc["tenth_agree"] == 0.5 and lc["tenth_within_1"] == 1.0
    assert lc["digit_agree"] == 0.5 and lc["digit_agree_boundary"] == 0.0 and lc["digit_agree_clear"] == 1.0
