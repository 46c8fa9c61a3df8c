"""Shared fixtures: a small haverland-layout folder built by the tests, and the real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("DIGITREC_DATA", REPO.parent / "shared" / "datasets" / "haverland"))


def digit_image(seed: int, size: tuple[int, int] = (24, 40)) -> np.ndarray:
    """A random blocky RGB crop; different seeds give uncorrelated images."""
    rng = np.random.default_rng(seed)
    w, h = size
    coarse = rng.integers(0, 256, size=(h // 4, w // 4, 1), dtype=np.int64)
    img = np.kron(coarse, np.ones((4, 4, 1), dtype=np.int64))
    tint = rng.integers(-20, 20, size=(1, 1, 3))
    return np.clip(img + tint, 0, 255).astype(np.uint8)


def near_copy(img: np.ndarray, seed: int) -> np.ndarray:
    """The same frame with a little sensor noise (a consecutive capture)."""
    noise = np.random.default_rng(seed).integers(-3, 4, size=img.shape)
    return np.clip(img.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def save(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture()
def make_dataset(tmp_path: Path):
    """Build a folder with `meters` meter folders of `per_meter` distinct labelled images."""

    def build(meters: int = 3, per_meter: int = 20, root: Path | None = None, seed0: int = 0) -> Path:
        root = root or tmp_path / "data"
        for m in range(meters):
            for k in range(per_meter):
                seed = seed0 + m * 1000 + k
                value = (seed * 7 % 100) / 10
                save(root / "images" / f"meter{m + seed0}" / f"{value:.1f}_img{seed}.png", digit_image(seed))
        return root

    return build


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real dataset; CI must have it, so there a missing copy fails instead of skipping."""
    if not (REAL_DATA / "images").is_dir():
        message = f"real dataset not found at {REAL_DATA} (set DIGITREC_DATA)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REAL_DATA
