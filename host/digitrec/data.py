"""The data stage: load a haverland-layout folder honestly.

* Every file under the root (any depth) is either used or reported with a reason
  (junk, empty, undecodable, no label, label out of range): never a crash.
* Exact duplicates (same bytes or same decoded pixels) are collapsed to one image;
  duplicates that disagree on the label are excluded from every side and listed.
* Near-identical images (consecutive frames of one meter) are clustered, and the
  train/val/test split assigns whole clusters by a hash of the cluster's key, so no
  near-copy lands on two sides and adding images does not move existing ones.
* ``mode="group"`` holds out whole meter folders instead, merging folders that share any
  near-duplicate cluster. ``mode="meter"`` merges only folders that share near-copies of
  a large part of one of them (a copied folder), and leaves out of val/test the few
  look-alike frames that have a near-copy on another side: many more meters held out
  (what a new user's meter looks like).
* Decoded, resized arrays are cached, keyed per file by (path, size, mtime) and by the
  preprocessing parameters, so a second run is fast and adding images only decodes those.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitrec import labels, preprocess

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp"}
SPLITS = ("train", "val", "test")
# Share of clusters (or groups) per side, by hash bucket out of 100.
SPLIT_PERCENT = {"test": 15, "val": 15}
SPLIT_MODES = ("cluster", "group", "meter")
# Meter mode: two folders are one meter (a copied or re-exported folder) when near-copies
# link at least this share of the images of one of them; look-alike frames of different
# meters of one model link far fewer.
COPIED_FOLDER_SHARE = 0.2
# Pearson correlation of 32x20 gray images (same or adjacent tenth) above which two images
# are near-copies: looser within one meter folder (consecutive frames), stricter across
# folders (copied folders), so clusters chain frames of one meter, not different meters.
NEAR_DUP_SAME_FOLDER = 0.85
NEAR_DUP_OTHER_FOLDER = 0.93
TWIN_CORRELATION = 0.98  # "visually the same frame" for the label-consistency figure
CACHE_VERSION = 1
_PREPROCESS_KEY = f"{preprocess.GRAY_WEIGHTS}-{preprocess.RESIZE_FILTER}-{preprocess.HEIGHT}x{preprocess.WIDTH}"


@dataclass
class Item:
    """One decodable, labelled image file."""

    path: str  # relative to the dataset root, with '/' separators
    group: str  # its folder: one meter
    value: float  # the reading, e.g. 4.6
    sha256: str  # of the file bytes
    pixel_hash: str  # of the decoded RGB pixels and shape
    status: str = "ok"  # ok | duplicate | conflict
    duplicate_of: str = ""
    cluster: int = -1

    @property
    def class100(self) -> int:
        return labels.class100(self.value)

    @property
    def class10(self) -> int:
        return labels.class10(self.value)


@dataclass
class Dataset:
    root: Path
    items: list[Item]
    gray: np.ndarray  # N x 32 x 20 x 1 uint8, aligned with items
    rgb: np.ndarray  # N x 32 x 20 x 3 uint8
    skipped: list[dict[str, str]]
    load_seconds: float = 0.0
    from_cache: int = 0
    _splits: dict[str, dict[str, list[int]]] = field(default_factory=dict, repr=False)

    @property
    def usable(self) -> list[int]:
        return [i for i, it in enumerate(self.items) if it.status == "ok"]

    @property
    def fingerprint(self) -> str:
        """Content hash of the usable images and their labels (order independent)."""
        rows = sorted(f"{self.items[i].sha256}:{self.items[i].class100}" for i in self.usable)
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]

    def split(self, mode: str = "cluster") -> dict[str, list[int]]:
        """Indices into ``items`` per side: train, val, test and excluded."""
        if mode not in self._splits:
            self._splits[mode] = _assign_split(self.items, mode)
        return self._splits[mode]

    def arrays(self, indices: list[int], color: str = "gray", classes: int = 10) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """uint8 N x 32 x 20 x C pixels, int64 labels and relative paths of ``indices``."""
        idx = np.asarray(indices, dtype=np.int64)
        x = (self.gray if color.lower() == "gray" else self.rgb)[idx]
        y = np.array([labels.label_for(self.items[i].value, classes) for i in indices], dtype=np.int64)
        return x, y, [self.items[i].path for i in indices]

    def tenths(self, indices: list[int]) -> np.ndarray:
        """int64 100-class labels of ``indices`` (no pixels gathered)."""
        return np.array([self.items[i].class100 for i in indices], dtype=np.int64)


# ---------------------------------------------------------------- scanning and decoding


def _scan(root: Path) -> tuple[list[tuple[str, int, int]], list[dict[str, str]]]:
    """(relpath, size, mtime_ns) of image candidates, and skipped junk with reasons."""
    candidates, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            ext = full.suffix.lower()
            if ext not in IMAGE_EXTENSIONS:
                skipped.append({"path": rel, "reason": f"not an image file ({ext or name})"})
                continue
            try:
                labels.parse_label(name)
            except labels.LabelError as exc:
                skipped.append({"path": rel, "reason": str(exc).split(":")[0]})
                continue
            st = full.stat()
            if st.st_size == 0:
                skipped.append({"path": rel, "reason": "empty file (0 bytes)"})
                continue
            candidates.append((rel, st.st_size, st.st_mtime_ns))
    return candidates, skipped


def _decode_one(args: tuple[str, str]) -> tuple[str, str, str, np.ndarray | None, np.ndarray | None, str]:
    """Decode one file: (rel, sha256, pixel_hash, gray, rgb, error)."""
    root, rel = args
    data = (Path(root) / rel).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        rgb = preprocess.decode_rgb(data)
    except ValueError as exc:
        return rel, sha, "", None, None, str(exc)
    pix = hashlib.sha1(np.asarray(rgb.shape, dtype=np.int32).tobytes() + rgb.tobytes()).hexdigest()
    return rel, sha, pix, preprocess.prepare(rgb, "gray"), preprocess.prepare(rgb, "rgb"), ""


def decode_workers(files: int) -> int:
    """Processes that decode ``files`` uncached files (a few are decoded in-process)."""
    return 1 if files < 200 else min(os.cpu_count() or 1, 4)


def _decode_all(root: Path, rels: list[str], progress: bool) -> list[tuple]:
    if not rels:
        return []
    from multiprocessing import Pool

    from tqdm import tqdm

    jobs = [(str(root), r) for r in rels]
    workers = decode_workers(len(jobs))
    bar = dict(total=len(jobs), desc="decoding images", unit="img", disable=not progress)
    if workers == 1:
        return [_decode_one(j) for j in tqdm(jobs, **bar)]
    with Pool(workers) as pool:
        return list(tqdm(pool.imap(_decode_one, jobs, chunksize=64), **bar))


# ---------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("DIGITREC_CACHE", Path.home() / ".cache" / "digitrec"))


def _cache_file(root: Path, cache_dir: Path) -> Path:
    key = hashlib.sha256(f"{CACHE_VERSION}|{_PREPROCESS_KEY}|{root.resolve()}".encode()).hexdigest()[:16]
    return cache_dir / f"data-{key}.npz"


def _read_cache(path: Path) -> dict[tuple[str, int, int], tuple]:
    """Per-file decoded entries keyed by (relpath, size, mtime_ns); empty if unusable."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            gray, rgb = z["gray"], z["rgb"]
    except (OSError, ValueError, KeyError):
        return {}
    out = {}
    for m in meta:
        ok = m["row"] >= 0
        entry = (m["rel"], m["sha"], m["pix"], gray[m["row"]] if ok else None, rgb[m["row"]] if ok else None, m["err"])
        out[(m["rel"], m["size"], m["mtime"])] = entry
    return out


def _write_cache(path: Path, keys: list[tuple[str, int, int]], entries: list[tuple]) -> None:
    meta, grays, rgbs = [], [], []
    for (rel, size, mtime), (_, sha, pix, g, c, err) in zip(keys, entries, strict=True):
        row = -1
        if g is not None:
            row = len(grays)
            grays.append(g)
            rgbs.append(c)
        meta.append({"rel": rel, "size": size, "mtime": mtime, "sha": sha, "pix": pix, "err": err, "row": row})
    path.parent.mkdir(parents=True, exist_ok=True)
    # A per-process temporary name: two trainings started together both fill the cache.
    fd, tmp_name = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp.npz", dir=path.parent)
    tmp = Path(tmp_name)
    shape = (0, preprocess.HEIGHT, preprocess.WIDTH)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                meta=np.array(json.dumps(meta)),
                gray=np.stack(grays) if grays else np.zeros((*shape, 1), np.uint8),
                rgb=np.stack(rgbs) if rgbs else np.zeros((*shape, 3), np.uint8),
            )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- loading


def load_dataset(root: str | Path, cache_dir: str | Path | None = None, progress: bool = True) -> Dataset:
    """Load, decode (cached), deduplicate and cluster a haverland-layout folder."""
    t0 = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}")
    candidates, skipped = _scan(root)
    cache_path = _cache_file(root, Path(cache_dir) if cache_dir else default_cache_dir())
    cached = _read_cache(cache_path)
    missing = [c[0] for c in candidates if c not in cached]
    fresh = dict(zip(missing, _decode_all(root, missing, progress), strict=True))
    entries = [cached[c] if c in cached else fresh[c[0]] for c in candidates]
    if missing or len(cached) != len(candidates):
        _write_cache(cache_path, candidates, entries)

    items, gray, rgb = [], [], []
    for (rel, sha, pix, g, c, err) in entries:
        if err:
            skipped.append({"path": rel, "reason": f"undecodable: {err}"})
            continue
        group = rel.rsplit("/", 1)[0] if "/" in rel else "."
        items.append(Item(rel, group, labels.parse_label(rel), sha, pix))
        gray.append(g)
        rgb.append(c)
    shape = (0, preprocess.HEIGHT, preprocess.WIDTH)
    ds = Dataset(
        root=root,
        items=items,
        gray=np.stack(gray) if gray else np.zeros((*shape, 1), np.uint8),
        rgb=np.stack(rgb) if rgb else np.zeros((*shape, 3), np.uint8),
        skipped=sorted(skipped, key=lambda s: s["path"]),
        from_cache=len(candidates) - len(missing),
    )
    _mark_duplicates(ds.items)
    _cluster_near_duplicates(ds)
    ds.load_seconds = time.perf_counter() - t0
    return ds


def time_loads(root: str | Path, progress: bool = True) -> tuple[Dataset, dict[str, float | int]]:
    """Load twice through an empty temporary cache: the first load decodes every file (what a
    fresh machine pays), the second reads the cache the first wrote. The user's cache is untouched."""
    with tempfile.TemporaryDirectory(prefix="digitrec-load-") as tmp:
        first = load_dataset(root, cache_dir=tmp, progress=progress)
        second = load_dataset(root, cache_dir=tmp, progress=False)
    timing = {"first_s": round(first.load_seconds, 2), "cached_s": round(second.load_seconds, 2),
              "files": second.from_cache, "workers": decode_workers(second.from_cache)}  # fmt: skip
    return second, timing


def _mark_duplicates(items: list[Item]) -> None:
    """Collapse pixel-identical images; exclude all copies when their labels disagree."""
    by_pixels: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_pixels[it.pixel_hash].append(it)
    for members in by_pixels.values():
        if len(members) < 2:
            continue
        if len({m.class100 for m in members}) > 1:
            for m in members:
                m.status = "conflict"
            continue
        keep = min(members, key=lambda m: m.path)
        for m in members:
            if m is not keep:
                m.status, m.duplicate_of = "duplicate", keep.path


def duplicate_report(items: list[Item]) -> dict[str, object]:
    """Counts of byte- and pixel-identical groups and the conflicting ones."""
    by_bytes = Counter(it.sha256 for it in items)
    by_pixels: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        by_pixels[it.pixel_hash].append(it)
    dup_groups = [m for m in by_pixels.values() if len(m) > 1]
    conflicts = [m for m in dup_groups if m[0].status == "conflict"]
    return {
        "duplicate_groups": len(dup_groups),
        "duplicate_copies": sum(len(m) - 1 for m in dup_groups),
        "byte_identical_groups": sum(1 for n in by_bytes.values() if n > 1),
        "conflicting_groups": len(conflicts),
        "conflicting_files": sorted(
            ({"path": it.path, "label": it.value} for m in conflicts for it in m), key=lambda d: d["path"]
        ),
    }


# ---------------------------------------------------------------- near-duplicates and split


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _normalized(gray: np.ndarray) -> np.ndarray:
    v = gray.reshape(len(gray), -1).astype(np.float32)
    v -= v.mean(axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True) + 1e-6
    return v


def _cluster_near_duplicates(ds: Dataset) -> None:
    """Single-linkage clusters of usable images whose gray pixels correlate above threshold.

    Only images with the same or an adjacent tenth (circularly) are compared: a near-copy
    of a frame shows the same reading, give or take one step of label noise.
    """
    usable = ds.usable
    uf = _UnionFind(len(ds.items))
    vec = _normalized(ds.gray[usable]) if usable else np.zeros((0, 1), np.float32)
    folder_ids: dict[str, int] = {}
    folder = np.array([folder_ids.setdefault(ds.items[i].group, len(folder_ids)) for i in usable])
    by_class: dict[int, list[int]] = defaultdict(list)
    for pos, i in enumerate(usable):
        by_class[ds.items[i].class100].append(pos)
    for c, members in by_class.items():
        a = np.asarray(members)
        for other in (c, (c + 1) % 100):
            b = np.asarray(by_class.get(other, []))
            if len(b) == 0:
                continue
            sim = vec[a] @ vec[b].T
            same = folder[a][:, None] == folder[b][None, :]
            near = sim >= np.where(same, NEAR_DUP_SAME_FOLDER, NEAR_DUP_OTHER_FOLDER)
            for pa, pb in zip(*np.nonzero(near), strict=True):
                uf.union(usable[a[pa]], usable[b[pb]])
    for i in usable:
        ds.items[i].cluster = uf.find(i)


def _bucket(key: str, salt: str) -> str:
    h = int(hashlib.sha256(f"digitrec-split-v1:{salt}:{key}".encode()).hexdigest()[:8], 16) % 100
    if h < SPLIT_PERCENT["test"]:
        return "test"
    if h < SPLIT_PERCENT["test"] + SPLIT_PERCENT["val"]:
        return "val"
    return "train"


def _assign_split(items: list[Item], mode: str) -> dict[str, list[int]]:
    """Whole clusters (mode 'cluster') or whole meter folders (mode 'group') per side.

    A unit's key is the smallest content hash among its images (cluster mode) or the
    smallest folder name (group mode), so new images that join no existing unit never
    move existing images. Group mode also merges folders linked by a near-duplicate
    cluster, so a copied folder cannot land on both sides.
    """
    if mode not in SPLIT_MODES:
        raise ValueError(f"split mode must be one of {', '.join(SPLIT_MODES)}, not {mode!r}")
    if mode == "meter":
        return _assign_meter_split(items)
    usable = [i for i, it in enumerate(items) if it.status == "ok"]
    uf = _UnionFind(len(items))
    first_of: dict[object, int] = {}
    for i in usable:
        unit_keys = [("c", items[i].cluster)] + ([("g", items[i].group)] if mode == "group" else [])
        for k in unit_keys:
            uf.union(i, first_of.setdefault(k, i))
    keys: dict[int, str] = {}
    for i in usable:
        r = uf.find(i)
        mine = items[i].group if mode == "group" else items[i].sha256
        keys[r] = min(keys.get(r, mine), mine)
    out: dict[str, list[int]] = {s: [] for s in (*SPLITS, "excluded")}
    for i, it in enumerate(items):
        side = _bucket(keys[uf.find(i)], mode) if it.status == "ok" else "excluded"
        out[side].append(i)
    return out


def _meter_units(items: list[Item], usable: list[int]) -> dict[str, str]:
    """Folder -> its unit's key (the smallest folder name): folders are merged only when
    near-copies link at least COPIED_FOLDER_SHARE of the images of one of them."""
    size = Counter(items[i].group for i in usable)
    per_cluster: dict[int, Counter] = defaultdict(Counter)
    for i in usable:
        per_cluster[items[i].cluster][items[i].group] += 1
    shared: Counter = Counter()  # (a, b): images of folder a in clusters that also hold b
    for count in per_cluster.values():
        for a in count if len(count) > 1 else ():
            for b in count:
                if a != b:
                    shared[a, b] += count[a]
    folders = sorted(size)
    pos = {f: k for k, f in enumerate(folders)}
    uf = _UnionFind(len(folders))
    for (a, b), n in shared.items():  # both ways: a collection of many meters' frames is no meter
        if n >= COPIED_FOLDER_SHARE * size[a] and shared[b, a] >= COPIED_FOLDER_SHARE * size[b]:
            uf.union(pos[a], pos[b])
    key: dict[int, str] = {}
    for f in folders:  # sorted, so the first folder seen is the unit's smallest name
        key.setdefault(uf.find(pos[f]), f)
    return {f: key[uf.find(pos[f])] for f in folders}


def _assign_meter_split(items: list[Item]) -> dict[str, list[int]]:
    """Whole meters per side; a val/test image with a near-copy on another side is excluded
    (test keeps its images over val), so no held-out image has a near-copy in training."""
    usable = [i for i, it in enumerate(items) if it.status == "ok"]
    unit = _meter_units(items, usable)
    side = {i: _bucket(unit[items[i].group], "meter") for i in usable}
    sides_of: dict[int, set[str]] = defaultdict(set)
    for i in usable:
        sides_of[items[i].cluster].add(side[i])
    out: dict[str, list[int]] = {s: [] for s in (*SPLITS, "excluded")}
    for i, it in enumerate(items):
        s = side.get(i, "excluded")
        shared = sides_of[it.cluster] if s != "excluded" else set()
        if (s == "val" and len(shared) > 1) or (s == "test" and "train" in shared):
            s = "excluded"
        out[s].append(i)
    return out


def get_split_arrays(
    root: str | Path, split_name: str, color: str, classes: int, mode: str = "cluster"
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One call for later stages: pixels, labels and paths of one side of the split."""
    ds = load_dataset(root, progress=False)
    indices = ds.usable if split_name == "all" else ds.split(mode)[split_name]
    return ds.arrays(indices, color, classes)


# ---------------------------------------------------------------- stats and CLI


def label_consistency(ds: Dataset, threshold: float = TWIN_CORRELATION) -> dict[str, object]:
    """How often the labels of two near-identical frames of one meter agree.

    Every usable image is paired with its most similar other image in the same folder
    (Pearson correlation of the 32x20 gray pixels); pairs at or above ``threshold`` are
    "twins". Their label agreement estimates the label noise, and so the accuracy a model
    can be expected to reach: a classifier gives twins the same answer, so it cannot match
    both labels of a disagreeing pair.
    """
    usable = np.asarray(ds.usable, dtype=np.int64)
    vec = _normalized(ds.gray[usable]) if len(usable) else np.zeros((0, 1), np.float32)
    best = np.full(len(usable), -1.0)
    partner = np.arange(len(usable))
    members: dict[str, list[int]] = defaultdict(list)
    for pos, i in enumerate(usable):
        members[ds.items[i].group].append(pos)
    for pos_list in members.values():
        m = np.asarray(pos_list)
        if len(m) < 2:
            continue
        sim = vec[m] @ vec[m].T
        np.fill_diagonal(sim, -2.0)
        j = sim.argmax(axis=1)
        best[m], partner[m] = sim[np.arange(len(m)), j], m[j]
    twins = np.flatnonzero(best >= threshold)
    c100 = ds.tenths(usable)
    a, b = c100[twins], c100[partner[twins]]
    dist = labels.circular_distance(a, b)
    digit_same = labels.class10_from_class100(a) == labels.class10_from_class100(b)
    at_boundary = labels.at_rounding_boundary(a)

    def mean(v: np.ndarray) -> float | None:
        return float(np.mean(v)) if len(v) else None

    return {
        "threshold": threshold,
        "twins": int(len(twins)),
        "tenth_agree": mean(dist == 0),
        "tenth_within_1": mean(dist <= 1),
        "digit_agree": mean(digit_same),
        "digit_agree_boundary": mean(digit_same[at_boundary]),
        "digit_agree_clear": mean(digit_same[~at_boundary]),
    }


def stats(ds: Dataset, mode: str = "cluster") -> dict[str, object]:
    """The JSON summary of `digitrec data stats`."""
    usable = ds.usable
    split = ds.split(mode)
    per10 = Counter(ds.items[i].class10 for i in usable)
    per100 = Counter(ds.items[i].class100 for i in usable)
    clusters = Counter(ds.items[i].cluster for i in usable)
    return {
        "root": str(ds.root),
        "fingerprint": ds.fingerprint,
        "images": len(usable),
        "files_decoded": len(ds.items),
        "skipped": len(ds.skipped),
        "skipped_reasons": dict(Counter(s["reason"].split(":")[0] for s in ds.skipped)),
        "skipped_files": ds.skipped,
        **duplicate_report(ds.items),
        "per_class_10": {str(c): per10.get(c, 0) for c in range(10)},
        "per_class_100": {str(c): per100.get(c, 0) for c in range(100)},
        "groups": len({ds.items[i].group for i in usable}),
        "near_duplicate_clusters": len(clusters),
        "largest_cluster": max(clusters.values(), default=0),
        "split_mode": mode,
        "splits": {s: len(split[s]) for s in SPLITS},
        "excluded": len(split["excluded"]),
        "label_consistency": label_consistency(ds),
        "load_seconds": round(ds.load_seconds, 2),
        "from_cache": ds.from_cache,
    }


def save_montage(ds: Dataset, path: Path, per_class: int = 6) -> None:
    """PNG of a few usable samples per 10-class digit (rows) for a quick look."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: dict[int, list[int]] = defaultdict(list)
    for i in ds.usable:
        if len(rows[ds.items[i].class10]) < per_class:
            rows[ds.items[i].class10].append(i)
    fig, axes = plt.subplots(10, per_class, figsize=(per_class * 0.9, 10 * 1.3))
    for r in range(10):
        for c in range(per_class):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(rows[r]):
                i = rows[r][c]
                ax.imshow(ds.rgb[i])
                ax.set_title(f"{ds.items[i].value:.1f}", fontsize=7)
    fig.suptitle("samples per digit (32x20 preprocessed)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _print_stats(s: dict[str, object]) -> None:
    print(f"dataset        {s['root']}  (fingerprint {s['fingerprint']})")
    print(f"usable images  {s['images']}  from {s['files_decoded']} decoded files in {s['groups']} meter folders")
    print(f"skipped files  {s['skipped']}  {s['skipped_reasons']}")
    print(
        f"duplicates     {s['duplicate_groups']} groups of identical images ({s['duplicate_copies']} extra copies,"
        f" {s['byte_identical_groups']} byte-identical groups)"
    )
    print(f"conflicts      {s['conflicting_groups']} duplicate groups with disagreeing labels (excluded)")
    print(f"near-dup       {s['near_duplicate_clusters']} clusters (largest {s['largest_cluster']} images)")
    sp = s["splits"]
    print(f"split ({s['split_mode']})  train {sp['train']}  val {sp['val']}  test {sp['test']}  excluded {s['excluded']}")
    print("per digit      " + "  ".join(f"{k}:{v}" for k, v in s["per_class_10"].items()))
    lc = s["label_consistency"]
    if lc["twins"]:
        print(
            f"label noise    {lc['twins']} near-identical frame pairs (corr >= {lc['threshold']}): same tenth"
            f" {100 * lc['tenth_agree']:.1f} %, within 0.1 {100 * lc['tenth_within_1']:.1f} %, same digit"
            f" {100 * lc['digit_agree']:.2f} % ({100 * lc['digit_agree_boundary']:.1f} % at x.4/x.5)"
        )
    print(f"load time      {s['load_seconds']} s ({s['from_cache']} files from cache)")
    if t := s.get("load_timing"):
        print(f"load timing    first {t['first_s']} s ({t['files']} files decoded on {t['workers']} process(es),"
              f" empty cache), cached {t['cached_s']} s")


def _data_root(args: argparse.Namespace) -> Path:
    if not args.data:
        raise SystemExit("error: no dataset: pass --data DIR or set DIGITREC_DATA")
    return Path(args.data)


def run_stats(args: argparse.Namespace) -> int:
    if args.time_loads:
        ds, timing = time_loads(_data_root(args), progress=not args.quiet)
    else:
        ds, timing = load_dataset(_data_root(args), cache_dir=args.cache, progress=not args.quiet), None
    s = stats(ds, args.split_mode)
    if timing:
        s["load_timing"] = timing
    _print_stats(s)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(s, indent=1))
        montage = out.with_name(out.stem + "_montage.png")
        save_montage(ds, montage)
        print(f"wrote {out} and {montage}")
    return 0


def run_split(args: argparse.Namespace) -> int:
    ds = load_dataset(_data_root(args), cache_dir=args.cache, progress=not args.quiet)
    split = ds.split(args.split_mode)
    doc: dict[str, object] = {k: [ds.items[i].path for i in v] for k, v in split.items()}
    doc["duplicates"] = {it.path: it.duplicate_of for it in ds.items if it.status == "duplicate"}
    doc["mode"] = args.split_mode
    doc["fingerprint"] = ds.fingerprint
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out}: " + ", ".join(f"{k} {len(split[k])}" for k in (*SPLITS, "excluded")))
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    from digitrec import fetch

    dest = fetch.fetch_dataset(args.url, args.sha256, Path(args.dest) if args.dest else None)
    print(f"dataset ready at {dest}")
    print(f"use it with: make bench DATA={dest}  (or export DIGITREC_DATA={dest})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="inspect, split and fetch the dataset",
        description="Data stage: load a haverland-layout folder, report junk and duplicates, split without leaks.",
    )
    verbs = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=os.environ.get("DIGITREC_DATA"), help="dataset root (default $DIGITREC_DATA)")
    common.add_argument("--cache", default=None, help="cache folder (default $DIGITREC_CACHE or ~/.cache/digitrec)")
    common.add_argument("--split-mode", choices=SPLIT_MODES, default="cluster",
                        help="cluster: near-duplicate clusters per side; group: whole meter folders per side; "
                             "meter: whole meters, collections not chained (docs/data.md)")
    common.add_argument("--quiet", action="store_true", help="no progress bar")
    s = verbs.add_parser("stats", parents=[common], help="summary, junk report, duplicates, split sizes (+ montage PNG)")
    s.add_argument("--json", help="write the summary JSON here (a montage PNG is written beside it)")
    s.add_argument("--time-loads", action="store_true",
                   help="time a first load (every file decoded, into an empty temporary cache) and a cached "
                        "load; --cache is not used")
    s.set_defaults(func=run_stats)
    sp = verbs.add_parser("split", parents=[common], help="write the train/val/test/excluded split as JSON")
    sp.add_argument("--out", required=True, help="output JSON file")
    sp.set_defaults(func=run_split)
    f = verbs.add_parser("fetch", help="download the pinned dataset archive (needs internet)")
    f.add_argument("--url", default=None, help="archive URL (default: the pinned GitHub commit); file:// works")
    f.add_argument("--sha256", default=None, help="expected SHA-256 of the archive (default: the one recorded at the first download)")
    f.add_argument("--dest", default=None, help="cache folder (default ~/.cache/digitrec/datasets)")
    f.set_defaults(func=run_fetch)
