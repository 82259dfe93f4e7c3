"""Test helpers for CLIP and images (reusable by other test modules).

- `use_tiny_clip(ws)`: point a workspace's `[clip]` at a tiny custom open_clip config with random
  (seeded) weights: the real open_clip code path, no download, thousands of images/s on a CPU.
- `make_images(folder, n)`: distinct small photos-like images (JPEG and PNG).
- `make_bad_images(folder)`: the awkward files the registry must survive, with what should happen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workbench.core.config import CONFIG_NAME, edit_section
from workbench.stages.embed.clip import TINY_MODEL_NAME, write_model_config


def set_config_section(ws, section: str, **values) -> None:
    """Set keys in one [section] of the workspace's workbench.toml (appending the section if missing)."""
    edit_section(ws.root / CONFIG_NAME, section, values)
    ws.reload_config()


def tiny_clip_config_file(folder: Path) -> Path:
    return write_model_config(Path(folder) / f"{TINY_MODEL_NAME}.json")


def use_tiny_clip(ws, *, batch_size: int = 16, num_workers: int = 0, **extra) -> Path:
    """Configure `ws` for the tiny random-weight CLIP; returns the model-config file."""
    path = tiny_clip_config_file(ws.root)
    set_config_section(ws, "clip", model=path.name, pretrained="", device="cpu", batch_size=batch_size,
                       num_workers=num_workers, **extra)
    return path


def make_images(folder: Path, n: int, *, size=(48, 40), seed: int = 0, prefix: str = "img") -> list[Path]:
    """n distinct images (alternating JPEG / PNG) with random blocks of colour."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        small = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
        img = Image.fromarray(small, "RGB").resize(size, Image.NEAREST)
        path = folder / (f"{prefix}{i:04d}." + ("jpg" if i % 2 == 0 else "png"))
        img.save(path, quality=95) if path.suffix == ".jpg" else img.save(path)
        out.append(path)
    return out


def make_bad_images(folder: Path) -> dict[str, str]:
    """Write awkward files; returns name → 'ok' (converted) or a word the problem reason must contain."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    expect: dict[str, str] = {}

    (folder / "empty.jpg").write_bytes(b"")
    expect["empty.jpg"] = "empty"

    (folder / "notes.jpg").write_text("this is a text file, not a picture\n")
    expect["notes.jpg"] = "not an image"

    good = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    buf = folder / "full.jpg"
    good.save(buf, quality=90)
    data = buf.read_bytes()
    buf.unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expect["truncated.jpg"] = "truncated"

    # 10000 x 10000 one-bit pixels: a few kB on disk, 100 M pixels when decoded.
    Image.new("1", (10000, 10000)).save(folder / "bomb.png")
    expect["bomb.png"] = "decompression bomb"

    # 1 x 40000: tiny on disk, but the model's shortest-side resize would make it 224 x 8,960,000 (9.4 GB)
    Image.new("RGB", (1, 40000), (200, 10, 10)).save(folder / "sliver.png")
    expect["sliver.png"] = "aspect ratio"

    Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg")  # pure red in CMYK
    expect["cmyk.jpg"] = "ok"

    ramp = (np.linspace(0, 65535, 32 * 16).reshape(16, 32)).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "grey16.png")
    expect["grey16.png"] = "ok"

    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    pal.paste(1, (0, 0, 10, 20))  # left half red, right half index 0 = transparent
    pal.save(folder / "palette_transparent.png", transparency=0)
    expect["palette_transparent.png"] = "ok"
    return expect
