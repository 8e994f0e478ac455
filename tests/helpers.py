"""Small helpers shared by tests (names file, noise photos, digests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SMALL_NAMES = ["Tom Hanks", "Emma Stone", "Jackie Chan", "Brad Pitt", "Angelina Jolie", "Will Smith", "Tom Cruise",
               "Priyanka Chopra", "Lupita Nyongo", "Shah Rukh"]


def small_names_file(folder: Path) -> Path:
    path = folder / "names.txt"
    path.write_text("\n".join(SMALL_NAMES) + "\n", encoding="utf-8")
    return path


def noise_photo(seed: int = 0, size: int = 96) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))
