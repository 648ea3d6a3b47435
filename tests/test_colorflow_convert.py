"""`convert_weights`: pickled checkpoints -> safetensors with torch.load(weights_only=True);
executable pickle content is refused without running it."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file  # noqa: E402

from chromaflow.models.colorflow.convert import ConvertError, convert_weights  # noqa: E402


class _RunsCode:
    """Unpickling this would run a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_folder_with_pickled_checkpoints_converts(tmp_path):
    src, dst = tmp_path / "release", tmp_path / "converted"
    (src / "GraySD").mkdir(parents=True)
    (src / "image_encoder").mkdir()
    lora = {"a.lora_A.default.weight": torch.randn(4, 8), "a.lora_B.default.weight": torch.randn(8, 4)}
    torch.save(lora, src / "GraySD" / "unet_lora.bin")
    shared = torch.randn(3, 3)
    # wrapped in {"state_dict": ...}, a tied tensor, a non-tensor entry and an int64 buffer
    torch.save(
        {"state_dict": {"w": shared, "tied": shared, "step": 7, "bn.num_batches_tracked": torch.tensor(5)}},
        src / "GraySD" / "MultiResNetModel.bin",
    )
    (src / "GraySD" / "config.json").write_text(json.dumps({"conditioning_channels": 9}))
    torch.save({"x": torch.ones(2)}, src / "image_encoder" / "pytorch_model.bin")

    report = convert_weights(src, dst)

    assert len(report["converted"]) == 3
    restored = load_file(dst / "GraySD" / "unet_lora.safetensors")
    assert set(restored) == set(lora)
    for key in lora:
        torch.testing.assert_close(restored[key], lora[key], rtol=0, atol=0)
    multires = load_file(dst / "GraySD" / "MultiResNetModel.safetensors")
    assert set(multires) == {"w", "tied", "bn.num_batches_tracked"}
    assert multires["bn.num_batches_tracked"].dtype == torch.int64
    torch.testing.assert_close(multires["tied"], shared, rtol=0, atol=0)
    skipped = {c["src"].rsplit("/", 1)[-1]: c["skipped_keys"] for c in report["converted"]}
    assert skipped["MultiResNetModel.bin"] == ["step"]
    assert (dst / "image_encoder" / "model.safetensors").is_file()  # transformers' name
    assert json.loads((dst / "GraySD" / "config.json").read_text()) == {"conditioning_channels": 9}


def test_single_file_conversion(tmp_path):
    torch.save({"k": torch.arange(6).reshape(2, 3)}, tmp_path / "w.pth")
    report = convert_weights(tmp_path / "w.pth", tmp_path / "out")
    assert report["converted"][0]["dst"].endswith("out/w.safetensors")
    assert load_file(tmp_path / "out" / "w.safetensors")["k"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_executable_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "src").mkdir()
    bad = tmp_path / "src" / "diffusion_pytorch_model.bin"
    torch.save({"w": torch.zeros(2), "payload": _RunsCode(marker)}, bad)
    with pytest.raises(ConvertError) as err:
        convert_weights(tmp_path / "src", tmp_path / "dst")
    assert str(err.value).startswith(f"{bad}: refused")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "dst" / "diffusion_pytorch_model.safetensors").exists()


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"\x00garbage")
    with pytest.raises(ConvertError, match="junk.bin: not a readable torch checkpoint"):
        convert_weights(tmp_path / "junk.bin", tmp_path / "out")
