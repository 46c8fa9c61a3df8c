"""`digitrec data fetch`: download the dataset archive at a pinned commit (needs internet).

The archive is streamed with a progress bar into a cache folder, its SHA-256 is checked,
and it is unpacked safely (no paths outside the destination). GitHub does not publish
checksums of its generated archives, so the first download records the SHA-256 it saw
in ``<archive>.sha256`` and every later download must match it (trust on first use);
pass ``--sha256`` to pin a value you have verified yourself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.request
import zipfile
from pathlib import Path

REPO = "haverland/Tenth-of-step-of-a-meter-digit"
COMMIT = "ebf9b2ba33b56a45d97b5463d19e8035d4afbb12"
DEFAULT_URL = f"https://github.com/{REPO}/archive/{COMMIT}.tar.gz"


class FetchError(RuntimeError):
    """Download, checksum or unpacking failed."""


def default_dest() -> Path:
    base = os.environ.get("DIGITREC_CACHE", Path.home() / ".cache" / "digitrec")
    return Path(base) / "datasets"


def download(url: str, target: Path, progress: bool = True) -> str:
    """Stream ``url`` to ``target`` with a progress bar; return the SHA-256 of the bytes."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="downloading", disable=not progress) as bar:
                while chunk := resp.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise FetchError(f"download of {url} failed: {exc}") from exc
    os.replace(tmp, target)
    return digest.hexdigest()


def _check_sha(archive: Path, actual: str, expected: str | None) -> None:
    record = archive.with_name(archive.name + ".sha256")
    if expected is None and record.exists():
        expected = record.read_text().split()[0]
    if expected is not None and actual != expected.lower():
        archive.unlink(missing_ok=True)
        raise FetchError(f"checksum mismatch for {archive.name}: expected {expected}, got {actual}")
    record.write_text(f"{actual}  {archive.name}\n")


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a .tar.gz or .zip into ``dest`` (refusing paths outside it); return the top folder."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if not (dest / name).resolve().is_relative_to(dest.resolve()):
                        raise FetchError(f"unsafe path in {archive.name}: {name}")
                z.extractall(dest)
        else:
            with tarfile.open(archive) as t:
                t.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise FetchError(f"cannot unpack {archive}: {exc}") from exc
    entries = list(dest.iterdir())
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else dest


def fetch_dataset(url: str | None = None, sha256: str | None = None, dest: Path | None = None,
                  progress: bool = True) -> Path:
    """Download (once), verify and unpack the dataset; return the folder to pass as --data."""
    url = url or DEFAULT_URL
    dest = dest or default_dest()
    name = url.rstrip("/").rsplit("/", 1)[-1]
    archive = dest / name
    actual = download(url, archive, progress)
    _check_sha(archive, actual, sha256)
    stem = name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".zip")
    root = unpack(archive, dest / stem)
    if not any(root.rglob("*.jpg")):
        raise FetchError(f"{archive} holds no .jpg images: not a haverland-layout dataset")
    return root
