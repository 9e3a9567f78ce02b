"""Image tower backends: ONNX Runtime on an exported copy computes what torch computes, one frame as in a
batch; the export is made once per model and weights and then read from the cache; int8 stays within its
guard of fp32 on real frames and does not depend on the batch; `auto` follows the documented rule."""

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
        said = [r.message for r in caplog.records if r.name == "cliplive.models.backends" and r.message.startswith("exporting")]
        assert [m.split(" of ")[0] for m in said] == ["exporting the image tower", "exporting the text tower"]
        caplog.clear()
        second = ClipEncoder(tiny_clip_config, "random", precision="fp32", backend="onnxruntime")
    assert not [r for r in caplog.records if r.name == "cliplive.models.backends"] and len(exports) == 2
    assert second._model is None  # made from the cache: the torch model is never created
    assert (first.image_tower.path, first.text_tower.path) == (second.image_tower.path, second.text_tower.path)
    assert sorted(p.suffix for p in (tmp_path / "onnx").iterdir()) == [".json", ".json", ".onnx", ".onnx"]  # the card, its tokenizer
    np.testing.assert_array_equal(first.encode_frames(frames(2)), second.encode_frames(frames(2)))
    np.testing.assert_array_equal(first.encode_texts(["a dog"]), second.encode_texts(["a dog"]))


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


def test_int8_is_static_cached_and_within_its_guard_on_real_frames(clip_pair, tiny_clip_config, tmp_path, monkeypatch, caplog):
    from cliplive.models import backends
    from cliplive.models.clip import ClipEncoder

    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path))
    with caplog.at_level("INFO", "cliplive.models.backends"):
        int8 = ClipEncoder(tiny_clip_config, "random", precision="int8")
    assert (int8.precision, int8.backend) == ("int8", "onnxruntime")
    assert any(r.message.startswith("calibrating an int8 copy") for r in caplog.records)
    guard = int8.image_tower.int8_guard
    assert guard["frames"] == backends.CALIBRATION_FRAMES // 2 and guard["min_cosine"] >= backends.INT8_MIN_COSINE
    real = backends.calibration_frames(6)
    fp32 = clip_pair[0].encode_frames(real)
    batched = int8.encode_frames(real)
    assert (fp32 * batched).sum(1).min() >= backends.INT8_MIN_COSINE
    # Static activation scales: a frame's embedding is the same whatever else is in its batch.
    np.testing.assert_array_equal(np.concatenate([int8.encode_frames([f]) for f in real]), batched)
    monkeypatch.setattr(backends, "calibration_frames", lambda: pytest.fail("calibrated again"))
    again = ClipEncoder(tiny_clip_config, "random", precision="int8")
    assert again.image_tower.path == int8.image_tower.path and again.image_tower.int8_guard == guard


def test_int8_weights_use_7_bits_where_dot_products_saturate(tiny_clip_config, tmp_path, monkeypatch):
    """Without VNNI, VPMADDUBSW's 16-bit pair sums saturate on 8-bit weights (ViT-B-32 on an AVX2 Zen 3: cosine
    0.9898): there the weights use 7 bits, and the two quantisations are cached apart."""
    from cliplive.models import backends
    from cliplive.models.clip import ClipEncoder

    assert backends.cpu_has_vnni("flags\t: fpu sse4_2 avx2 fma avx512f avx512_vnni avx512_bf16\n")
    assert backends.cpu_has_vnni("flags\t: fpu avx2 fma avx_vnni\n")
    assert not backends.cpu_has_vnni("flags\t: fpu sse4_2 avx avx2 fma f16c\n")  # AMD Zen 3
    assert not backends.cpu_has_vnni("")  # unknown: the safe side
    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path))
    towers = {}
    for vnni in (False, True):
        monkeypatch.setattr(backends, "cpu_has_vnni", lambda vnni=vnni: vnni)
        towers[vnni] = ClipEncoder(tiny_clip_config, "random", precision="int8").image_tower
    assert (towers[False].int8_guard["weight_bits"], towers[True].int8_guard["weight_bits"]) == (7, 8)
    assert towers[False].path != towers[True].path
    assert towers[False].int8_guard["min_cosine"] >= backends.INT8_MIN_COSINE  # on any CPU: 7 bits cannot saturate


def test_auto_uses_int8_only_where_its_guard_holds(tiny_clip_config, tmp_path, monkeypatch):
    from cliplive.models import backends, clip

    monkeypatch.setenv("CLIPLIVE_CACHE", str(tmp_path))
    for native_bf16 in (False, True):  # an AVX2-only CPU, one with AVX512_BF16 or AMX
        monkeypatch.setattr(clip, "_native_bf16", lambda device, native=native_bf16: native)
        chosen = clip.ClipEncoder(tiny_clip_config, "random")
        assert (chosen.precision, chosen.backend) == ("int8", "onnxruntime")
    monkeypatch.setattr(clip, "INT8_MIN_COSINE", 1.0)  # a guard no quantisation passes
    assert (clip.ClipEncoder(tiny_clip_config, "random").precision, chosen.image_tower.int8_guard["min_cosine"] < 1.0) == ("bf16", True)
    monkeypatch.setattr(clip, "_native_bf16", lambda device: False)
    fallback = clip.ClipEncoder(tiny_clip_config, "random")
    assert (fallback.precision, fallback.backend, fallback.image_tower.precision) == ("fp32", "onnxruntime", "fp32")
    assert clip.ClipEncoder(tiny_clip_config, "random", backend="torch").precision == "fp32"
    assert backends.choose_backend("auto", "int8") == "onnxruntime"


def test_auto_rule():
    assert choose_backend("auto", "bf16") == "torch"
    assert choose_backend("auto", "fp32") == "onnxruntime"  # installed here (importorskip above)
    assert choose_backend("torch", "fp32") == "torch"
    with pytest.raises(InputError, match="backend must be one of"):
        choose_backend("tensorrt", "fp32")
    with pytest.raises(InputError, match="int8 runs on the onnxruntime backend"):
        choose_backend("torch", "int8")
    with pytest.raises(ValueError, match="int8 runs on the onnxruntime backend"):
        EncoderSpec(backend="torch", precision="int8")
    with pytest.raises(ValueError, match="onnxruntime backend runs fp32"):
        EncoderSpec(backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        EncoderSpec(backend="tensorrt")
