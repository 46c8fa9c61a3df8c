"""`digitrec data fetch` against a local file:// archive (there is no internet here)."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from conftest import digit_image, save
from digitrec import cli, data, fetch


def make_archive(tmp_path: Path) -> Path:
    src = tmp_path / "src" / "Tenth-of-step-abc"
    for k in range(4):
        save(src / "images" / "meter" / f"{k}.0_x{k}.jpg", digit_image(k))
    archive = tmp_path / "abc.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        t.add(src, arcname=src.name)
    return archive


def test_fetch_file_url_checks_sha_and_unpacks(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    root = fetch.fetch_dataset(archive.as_uri(), sha, tmp_path / "cache", progress=False)
    ds = data.load_dataset(root, cache_dir=tmp_path / "c", progress=False)
    assert len(ds.usable) == 4
    # the recorded checksum is enforced on the next download (trust on first use)
    assert (tmp_path / "cache" / "abc.tar.gz.sha256").read_text().startswith(sha)


def test_fetch_refuses_a_wrong_checksum(tmp_path: Path) -> None:
    archive = make_archive(tmp_path)
    with pytest.raises(fetch.FetchError, match="checksum mismatch"):
        fetch.fetch_dataset(archive.as_uri(), "0" * 64, tmp_path / "cache", progress=False)
    assert not (tmp_path / "cache" / "abc.tar.gz").exists()


def test_fetch_refuses_unsafe_paths(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as t:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(fetch.FetchError):
        fetch.fetch_dataset(archive.as_uri(), None, tmp_path / "cache", progress=False)
    assert not (tmp_path / "escape.txt").exists()


def test_fetch_command_and_unreachable_url(tmp_path: Path, capsys) -> None:
    archive = make_archive(tmp_path)
    assert cli.main(["data", "fetch", "--url", archive.as_uri(), "--dest", str(tmp_path / "d")]) == 0
    assert "dataset ready" in capsys.readouterr().out
    with pytest.raises(fetch.FetchError, match="download of"):
        fetch.fetch_dataset((tmp_path / "missing.tar.gz").as_uri(), None, tmp_path / "d2", progress=False)
