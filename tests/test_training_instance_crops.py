"""Follow-Your-Color-style instance crops in build-training-set (`train.instance_crops`):
each character of a colored page becomes its own crop, white outside its mask, and the
crops round-trip through the training shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chromaflow.conf import load_config
from chromaflow.models.lines import extract_lines
from chromaflow.training.instance_crops import instance_crops
from test_instances import CARL, two_characters
from synthetic import PALETTES
from training_data import make_colored_archive

TINY = Path(__file__).resolve().parents[1] / "conf" / "tiny.yaml"


def _has(crop: np.ndarray, rgb) -> bool:
    return bool((np.abs(crop.astype(int) - rgb).max(axis=2) <= 2).sum() > 50)


def test_each_character_is_its_own_crop_white_outside_its_mask():
    page = two_characters(colored=True)
    config = load_config(None, ["train.instance_crops=true"])
    crops, records = instance_crops(page, extract_lines(page).lines, config)
    assert len(crops) == len(records) >= 2
    alice_body, carl_body = PALETTES["alice"]["body"], CARL["body"]
    alice = [c for c in crops if _has(c, alice_body)]
    carl = [c for c in crops if _has(c, carl_body)]
    assert alice and carl  # both characters were cropped ...
    assert not any(_has(c, carl_body) for c in alice) and not any(_has(c, alice_body) for c in carl)  # ... apart
    for crop, record in zip(crops, records):
        x0, y0, x1, y1 = record["box"]
        assert crop.shape == (y1 - y0, x1 - x0, 3)
        assert 0 < record["area"] <= crop.shape[0] * crop.shape[1]
    assert instance_crops(page, extract_lines(page).lines, load_config(None, ["instances.backend=none"])) == ([], [])


def test_instance_crops_round_trip_through_the_training_shards(tmp_path):
    from chromaflow.training.build_set import build_config_hash, build_training_set
    from chromaflow.training.dataset import ShardReader, open_training_set

    src = make_colored_archive(tmp_path / "archive", chapters=2, pages=2, size=256)
    (src / "chapter1" / "p9.png").unlink()  # the corrupt page is another test's subject
    config = load_config(TINY, ["train.instance_crops=true", "train.validation_chapters=0"])
    assert build_config_hash(config) != build_config_hash(load_config(TINY, ["train.validation_chapters=0"]))
    build_training_set(src, tmp_path / "data", config)
    reader = ShardReader(open_training_set(tmp_path / "data").shards("train"))
    pages = [reader.page(i) for i in range(len(reader))]
    assert len(pages) == 4 and any(p.meta["instances"] for p in pages)
    for page in pages:
        assert len(page.instance_crops) == len(page.meta["instances"])
        for crop, record in zip(page.instance_crops, page.meta["instances"]):
            x0, y0, x1, y1 = record["box"]
            inside = page.color[y0:y1, x0:x1]
            kept = (crop != 255).any(axis=2)
            assert kept.any() and (crop[kept] == inside[kept]).all()  # the page's own pixels, nothing else


def test_an_episode_in_the_archive_becomes_frame_samples(tmp_path):
    """build-training-set reads videos with the streamed reader (storage/video.py)."""
    from chromaflow.training.build_set import build_training_set
    from test_episodes import drawing, write_clip

    (tmp_path / "archive").mkdir()
    write_clip(tmp_path / "archive" / "ep01.mp4", [drawing(i) for i in range(8)], list(range(8)))
    config = load_config(TINY, ["train.validation_chapters=0", "train.exclude_neighbors=1"])
    info = build_training_set(tmp_path / "archive", tmp_path / "data", config)
    assert info["splits"]["train"]["pages"] == 8 and not info["skipped"]
