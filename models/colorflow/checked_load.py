"""Strict state-dict loading: every key of a weights file accounted for, one-line errors.

`load_state_dict_checked` counts matched / missing / unexpected / shape-mismatched keys and
raises `WeightsError` naming the file and the first few offenders (the official ColorFlow code
uses strict=False, which silently loads nothing when names differ). `LoadReport.from_info`
turns the loading info of diffusers'/transformers' `from_pretrained(output_loading_info=True)`
into the same report. Used by weights.py (folders) and lora.py (the LoRA file).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_SHOW = 5


class WeightsError(ValueError):
    """A weights file or folder does not match what the model expects (one line)."""


@dataclass
class LoadReport:
    source: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # "key: file shape vs model shape"

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        return (
            f"{self.source}: {len(self.matched)} matched, {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.mismatched)} shape-mismatched"
        )

    @classmethod
    def from_info(cls, source: str, info: dict, model_keys) -> "LoadReport":
        """From `from_pretrained(..., output_loading_info=True)`'s info dict."""
        report = cls(source)
        report.missing = sorted(info.get("missing_keys", []))
        report.unexpected = sorted(info.get("unexpected_keys", []))
        report.mismatched = [_mismatch_text(m) for m in info.get("mismatched_keys", [])]
        bad = set(report.missing) | {str(m[0]) for m in info.get("mismatched_keys", []) if isinstance(m, tuple)}
        report.matched = [k for k in model_keys if k not in bad]
        return report

    def error_line(self) -> str:
        parts = [self.summary()]
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("mismatched", self.mismatched)):
            if keys:
                more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
                parts.append(f"{label}: {', '.join(keys[:_SHOW])}{more}")
        return "; ".join(parts)


def _mismatch_text(entry) -> str:
    if isinstance(entry, tuple) and len(entry) == 3:  # diffusers: (key, file shape, model shape)
        key, file_shape, model_shape = entry
        return f"{key} {tuple(file_shape)} vs {tuple(model_shape)}"
    return str(entry)


def load_state_dict_checked(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    required_keys: set[str] | None = None,
    assign: bool = False,
) -> LoadReport:
    """Copy `state_dict` into `module`, failing on any mismatch.

    required_keys: the model keys the file must provide (default: all of them). Keys of the
    model outside that set may be absent (e.g. base weights when loading a LoRA file).
    assign: use the file's tensors as the parameters (for models built on the meta device)."""
    own = module.state_dict()
    required = set(own) if required_keys is None else required_keys
    report = LoadReport(source)
    for key, value in state_dict.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key} {tuple(value.shape)} vs {tuple(own[key].shape)}")
        else:
            report.matched.append(key)
    report.missing = sorted(required - set(state_dict))
    if not report.ok:
        raise WeightsError(report.error_line())
    with torch.no_grad():
        module.load_state_dict({k: state_dict[k] for k in report.matched}, strict=False, assign=assign)
    log.info(report.summary())
    return report


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path}: pickled checkpoint; convert it once with `chromaflow convert-weights {path.parent} DST` "
            "(only safetensors are loaded)"
        )
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found") from None
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise WeightsError(f"{path}: not a readable safetensors file ({exc})") from None


def find_weights_file(folder: Path, stem: str) -> Path:
    """`folder/stem.safetensors`; a clear error if only a pickled version (or nothing) is there."""
    candidate = folder / f"{stem}.safetensors"
    if candidate.is_file():
        return candidate
    pickled = [folder / f"{stem}{s}" for s in PICKLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if pickled:
        raise WeightsError(
            f"{pickled[0]}: pickled checkpoint; convert the folder once with "
            f"`chromaflow convert-weights {folder} DST` and point the config at DST"
        )
    raise WeightsError(f"{candidate}: weights file not found")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: config file not found") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
