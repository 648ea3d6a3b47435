"""The `sam` instance segmenter: Segment Anything's automatic mask generator on the page.

SAM (Kirillov et al. 2023) from a local checkpoint (sam_checkpoint.py; never downloads)
runs `SamAutomaticMaskGenerator` with the point grid, IoU and stability thresholds of the
`instances.sam_*` keys, on the extracted line art (`sam_input: lines`) or the page itself;
its masks are merged into character instances (merge.py) and fitted to the line art's
regions (snap.py). On a GPU (`instances.device: auto` picks CUDA when present) the image
encoder, the expensive part, runs for several pages in one batch: `segment_batch`
encodes all pages first and the generator then reads each page's embedding instead of
encoding it again (BatchedPredictor).
"""

from __future__ import annotations

import numpy as np

from .base import Instance
from .merge import merge_masks
from .sam_checkpoint import load_sam
from .snap import snap_to_regions


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def batched_predictor(model):
    """A SamPredictor whose image embeddings can be computed for several images at once
    (`prime`); `set_image` then takes the primed embedding of an image of that size."""
    import torch
    from segment_anything import SamPredictor

    class BatchedPredictor(SamPredictor):
        def __init__(self, sam):
            super().__init__(sam)
            self._primed: list[tuple] = []

        @torch.no_grad()
        def prime(self, images: list[np.ndarray]) -> None:
            batch, sizes = [], []
            for image in images:
                resized = self.transform.apply_image(image)
                tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
                batch.append(self.model.preprocess(tensor))
                sizes.append((image.shape[:2], tuple(tensor.shape[-2:])))
            features = self.model.image_encoder(torch.cat(batch)) if batch else []
            self._primed = [(orig, inp, features[i:i + 1]) for i, (orig, inp) in enumerate(sizes)]

        def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
            if self._primed and self._primed[0][0] == image.shape[:2]:
                original, input_size, features = self._primed.pop(0)
                self.reset_image()
                self.original_size, self.input_size, self.features = original, input_size, features
                self.is_image_set = True
            else:
                super().set_image(image, image_format)

    return BatchedPredictor(model)


class SamSegmenter:
    name = "sam"

    def __init__(self, model, cfg):
        from segment_anything import SamAutomaticMaskGenerator

        self.cfg = cfg
        self.generator = SamAutomaticMaskGenerator(
            model, points_per_side=cfg.sam_points_per_side, points_per_batch=cfg.sam_points_per_batch,
            pred_iou_thresh=cfg.sam_pred_iou_thresh, stability_score_thresh=cfg.sam_stability_score_thresh,
            box_nms_thresh=cfg.sam_box_nms_thresh, output_mode="binary_mask")
        self.generator.predictor = batched_predictor(model)

    @classmethod
    def from_config(cls, config) -> "SamSegmenter":
        from chromaflow.conf import ConfigError

        cfg = config.instances
        if not cfg.sam_checkpoint:
            raise ConfigError("instances.backend sam needs instances.sam_checkpoint (a local SAM .pth/.safetensors)")
        return cls(load_sam(cfg.sam_checkpoint, cfg.sam_arch, resolve_device(cfg.device)), cfg)

    def sam_input(self, lines: np.ndarray, page: np.ndarray) -> np.ndarray:
        if self.cfg.sam_input == "page":
            return np.ascontiguousarray(page)
        return np.ascontiguousarray(np.repeat(lines[..., None], 3, axis=2))

    def segment(self, lines: np.ndarray, page: np.ndarray) -> list[Instance]:
        return self.segment_batch([(lines, page)])[0]

    def segment_batch(self, pages: list[tuple[np.ndarray, np.ndarray]]) -> list[list[Instance]]:
        images = [self.sam_input(lines, page) for lines, page in pages]
        self.generator.predictor.prime(images)
        out = []
        for (lines, _), image in zip(pages, images):
            records = self.generator.generate(image)
            out.append(snapped(merge_masks(records, lines.shape, self.cfg.min_area), lines))
        return out


def snapped(instances: list[Instance], lines: np.ndarray) -> list[Instance]:
    """The merged instances fitted to the line art's regions (snap.py)."""
    from .base import label_map

    if not instances:
        return []
    labels = snap_to_regions(label_map(instances, lines.shape), lines)
    out = []
    for i, instance in enumerate(instances, start=1):
        mask = labels == i
        if mask.any():
            out.append(Instance(mask=mask, score=instance.score, group=instance.group))
    return out
