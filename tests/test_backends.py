"""Image tower backends: ONNX Runtime on an exported copy computes what torch computes, one frame as in a
batch; the export is made once per model and weights and then read from the cache; `auto` follows the
documented rule."""

from __future__ import annotations

import numpy as np
import pytest

from cliplive.models.backends import choose_backend
from cliplive.models.errors import InputError
from cliplive.models.spec import EncoderSpec

pytest.importorskip("onnxruntime")


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(count)]


@pytest.fixture(scope="module")
def clip_pair(tiny_clip_config, tmp_path_factory):
    import os

    from cliplive.models.clip import ClipEncoder

    os.environ["CLIPLIVE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        return ClipEncoder(tiny_clip_config, "random", precision="fp32", backend="torch"), \
            ClipEncoder(tiny_clip_config, "random", precision="fp32", backend="onnxruntime")
    finally:
        del os.environ["CLIPLIVE_CACHE"]


def test_onnxruntime_matches_torch(clip_pair):
    torch_encoder, onnx_encoder = clip_pair
    assert (torch_encoder.backend, onnx_encoder.backend) == ("torch", "onnxruntime")
    batch = frames(6)
    expected, got = torch_encoder.encode_frames(batch), onnx_encoder.encode_frames(batch)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert (expected * got).sum(1).min() > 0.9999
    one_at_a_time = np.concatenate([onnx_encoder.encode_frames([f]) for f in batch])
    np.testing.assert_allclose(one_at_a_time, got, atol=1e-4)
    assert onnx_encoder.name == torch_encoder.name  # a scorer checkpoint fits both


def test_export_is_cached_by_model_and_weights(tiny_clip_config, tmp_path, monkeypatch, caplog):
    import torch

    from cliplive.models.clip import ClipEncoder

    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path))
    exports = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (exports.append(a[2]), real_export(*a, **k)))
    with caplog.at_level("INFO", "cliplive.models.backends"):
        first = ClipEncoder(tiny_clip_config, "random", precision="fp32", backend="onnxruntime")
        assert [r.message for r in caplog.records if r.name == "cliplive.models.backends"][0].startswith("exporting the image tower of")
        caplog.clear()
        second = ClipEncoder(tiny_clip_config, "random", precision="fp32", backend="onnxruntime")
    assert not [r for r in caplog.records if r.name == "cliplive.models.backends"] and len(exports) == 1
    assert first.image_tower.path == second.image_tower.path and list((tmp_path / "onnx").iterdir()) == [first.image_tower.path]
    np.testing.assert_array_equal(first.encode_frames(frames(2)), second.encode_frames(frames(2)))


def test_conse_onnxruntime_matches_torch_on_real_weights(conse, tmp_path, monkeypatch):
    from cliplive.models.conse import ConseEncoder

    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path))
    onnx_conse = ConseEncoder(backend="onnxruntime")
    batch = frames(4, seed=1)
    torch_probabilities = conse.class_probabilities(conse.preprocess(batch)) if conse.backend == "torch" else None
    got = onnx_conse.class_probabilities(onnx_conse.preprocess(batch))
    if torch_probabilities is not None:
        np.testing.assert_allclose(got.numpy(), torch_probabilities.numpy(), atol=1e-5)
    expected = conse.encode_frames(batch)
    assert (expected * onnx_conse.encode_frames(batch)).sum(1).min() > 0.9999


def test_auto_rule():
    assert choose_backend("auto", "bf16") == "torch"
    assert choose_backend("auto", "fp32") == "onnxruntime"  # installed here (importorskip above)
    assert choose_backend("torch", "fp32") == "torch"
    with pytest.raises(InputError, match="backend must be one of"):
        choose_backend("tensorrt", "fp32")
    with pytest.raises(ValueError, match="onnxruntime backend runs fp32"):
        EncoderSpec(backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        EncoderSpec(backend="tensorrt")
