"""One-time conversion of ColorFlow's pickled checkpoints to safetensors.

`convert_weights(src, dst)` is the only place in chromaflow that unpickles anything, and it
does so with `torch.load(weights_only=True)`: a checkpoint whose pickle would import or call
anything beyond tensors and plain containers is refused (nothing from it is executed).
Wired to the CLI as `chromaflow convert-weights SRC DST`.

src may be one file or a folder (converted recursively, keeping the layout). Pickled files
become `<stem>.safetensors`, except transformers' `pytorch_model.bin` -> `model.safetensors`.
Other files (config.json, tokenizer files, existing safetensors) are copied (hard-linked
when possible). A pickled file with a safetensors sibling of the same target name is skipped.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
_RENAMES = {"pytorch_model.bin": "model.safetensors"}


class ConvertError(ValueError):
    """A checkpoint could not (or must not) be converted; one line naming the file."""


def _target_name(path: Path) -> str:
    return _RENAMES.get(path.name, path.stem + ".safetensors")


def _unwrap(obj: Any, path: Path) -> dict:
    # Common wrappers: {"state_dict": {...}} / {"model": {...}}
    if isinstance(obj, dict) and len(obj) == 1:
        (only,) = obj.values()
        if isinstance(only, dict):
            obj = only
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: not a state dict (found {type(obj).__name__})")
    return obj


def load_pickled_state_dict(path: str | Path) -> tuple[dict, list[str]]:
    """torch.load(weights_only=True); returns (tensors, names of skipped non-tensor entries)."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message is a paragraph; keep the line that names what was refused
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
        if "GLOBAL" in detail:
            raise ConvertError(f"{path}: refused, the pickle would import/call code ({detail})") from None
        raise ConvertError(f"{path}: not a readable torch checkpoint ({detail})") from None
    except (RuntimeError, EOFError, ValueError) as exc:
        raise ConvertError(f"{path}: not a readable torch checkpoint ({str(exc).splitlines()[0]})") from None
    state = _unwrap(obj, path)
    tensors, skipped = {}, []
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value
        else:
            skipped.append(str(key))
    if not tensors:
        raise ConvertError(f"{path}: no tensors in the checkpoint")
    return tensors, skipped


def _save_safetensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    # safetensors refuses tensors sharing storage (tied weights); store each one separately
    seen: set[tuple[int, int]] = set()
    out = {}
    for key, value in tensors.items():
        ident = (value.untyped_storage().data_ptr(), value.untyped_storage().nbytes())
        if ident in seen or not value.is_contiguous():
            value = value.contiguous().clone()
        else:
            seen.add(ident)
        out[key] = value
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(out, str(tmp), metadata={"format": "pt", "converted_by": "chromaflow convert-weights"})
    os.replace(tmp, path)  # no half-written file under the final name


def _copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def convert_weights(src: str | Path, dst: str | Path) -> dict:
    """Convert src (file or folder) into dst. Returns {"converted": [...], "copied": [...],
    "skipped": [...]}; raises ConvertError (one line naming the file) on a bad checkpoint."""
    src, dst = Path(src), Path(dst)
    if not src.exists():
        raise ConvertError(f"{src}: not found")
    report: dict[str, list] = {"converted": [], "copied": [], "skipped": []}
    if src.is_file():
        if src.suffix not in PICKLE_SUFFIXES:
            raise ConvertError(f"{src}: not a pickled checkpoint ({', '.join(PICKLE_SUFFIXES)})")
        target = dst / _target_name(src) if dst.is_dir() or not dst.suffix else dst
        files = [(src, target)]
    else:
        files = [(p, dst / p.relative_to(src)) for p in sorted(src.rglob("*")) if p.is_file()]
    for path, target in files:
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in PICKLE_SUFFIXES:
            if target.suffix != ".safetensors":
                target = target.with_name(_target_name(path))
            if (path.parent / target.name).is_file():  # the release already ships it as safetensors
                report["skipped"].append({"src": str(path), "reason": f"{target.name} exists next to it"})
                continue
            tensors, skipped_keys = load_pickled_state_dict(path)
            _save_safetensors(tensors, target)
            report["converted"].append(
                {"src": str(path), "dst": str(target), "tensors": len(tensors), "skipped_keys": skipped_keys}
            )
        elif not target.exists():
            _copy(path, target)
            report["copied"].append(str(target))
    return report
