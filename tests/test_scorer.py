"""The causal scorer: incremental == full causal forward, zero-shot == calibrated similarity, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cliplive.models import scorer as scorer_lib
from cliplive.models.scorer import CausalScorer, CheckpointError, ScorerConfig
from cliplive.models.shots import ShotPrior


def randomised(config: ScorerConfig, seed: int = 0) -> CausalScorer:
    """A scorer with every weight random (residual heads included), as after training."""
    torch.manual_seed(seed)
    model = CausalScorer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    return model


def unit(*shape, seed=1):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize("window,layers,frames", [(1, 1, 6), (4, 2, 23), (8, 3, 8), (32, 2, 50)])
def test_incremental_step_equals_full_causal_forward(window, layers, frames):
    model = randomised(ScorerConfig(dim=48, heads=4, layers=layers, window=window))
    x, q = unit(frames, 48), unit(3, 48, seed=2)
    with torch.no_grad():
        full = model(x, q)
    state = model.init_state()
    steps = [model.step(state, frame, q) for frame in x]
    # The same sums in another order (a concatenated cache vs one masked matmul; AVX2 and AVX-512 kernels
    # block them differently): logits up to ~20, where a float32 ulp is 2e-6. Worst seen 4.8e-6 over 30
    # seeds, AVX-512 and AVX2.
    torch.testing.assert_close(torch.stack([s.relevance for s in steps]), full.relevance, atol=3e-5, rtol=0)
    torch.testing.assert_close(torch.stack([s.score for s in steps]), full.score, atol=3e-5, rtol=0)
    # The cache never holds more than the window needs: cost per frame stays O(W).
    assert all(k.shape[1] == min(window - 1, frames) for k in state.keys)


def test_causal_outputs_ignore_the_future_and_the_far_past():
    model = randomised(ScorerConfig(dim=32, heads=2, layers=2, window=4))
    x, q = unit(12, 32), unit(2, 32, seed=3)
    with torch.no_grad():
        base = model(x, q).relevance
        # Masked keys weigh exp(-inf) = 0 and every other op is row-wise, so unseen frames change nothing:
        # bit-identical on AVX-512 and AVX2 (30 seeds). 1e-6 only spares a kernel that blocks rows
        # differently; a leak would be of the order of the 0.1-1 that a visible frame moves (below).
        changed_future = x.clone()
        changed_future[8:] = unit(4, 32, seed=9)
        torch.testing.assert_close(model(changed_future, q).relevance[:8], base[:8], atol=1e-6, rtol=0)
        # Two layers of window 4 see 2 * 3 frames back; frame 11 cannot see frame 4 or earlier.
        changed_past = x.clone()
        changed_past[:5] = unit(5, 32, seed=10)
        torch.testing.assert_close(model(changed_past, q).relevance[11], base[11], atol=1e-6, rtol=0)
        assert (model(changed_past, q).relevance[6] - base[6]).abs().max() > 1e-2  # >= 0.095 over 30 seeds


def test_batched_sequences_equal_single_ones():
    model = randomised(ScorerConfig(dim=32, heads=4, layers=2, window=5))
    x, q = unit(2, 9, 32), unit(4, 32, seed=5)
    with torch.no_grad():
        batched = model(x, q)
        for i in range(2):
            # A batch of 2 runs other GEMM blockings than a batch of 1, and AVX2 kernels others than
            # AVX-512 ones: logits up to ~20 (float32 ulp 2e-6) differ by 1-2 ulps, worst 1.9e-6 over 30
            # seeds on both (an AVX2-only EPYC failed the former atol of 1e-6).
            torch.testing.assert_close(batched.relevance[i], model(x[i], q).relevance, atol=1e-5, rtol=0)


def test_untrained_scorer_is_calibrated_similarity_and_ranks_by_it():
    model = scorer_lib.zero_shot(64, (20.0, -5.0))
    x, q = unit(30, 64, seed=7), unit(3, 64, seed=8)
    with torch.no_grad():
        out = model(x, q)
    cosine = x @ q.T
    # The scorer computes the same matmul and affine map (its zero heads add exact zeros): bit-identical
    # on AVX-512 and AVX2. A few ulps of |logit| <= 25 (2e-6 each) allowed all the same: MKL promises
    # equal results for equal calls only under MKL_CBWR.
    torch.testing.assert_close(out.relevance, 20.0 * cosine - 5.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.score, out.relevance.max(-1).values, atol=1e-5, rtol=0)
    for j in range(3):  # zero-shot ranking of frames per query follows similarity exactly
        assert torch.equal(out.relevance[:, j].argsort(), cosine[:, j].argsort())


def test_numpy_zero_shot_scorer_equals_the_untrained_causal_scorer():
    """What a stream without a trained scorer runs (no torch) is what the untrained transformer computes."""
    from cliplive.models.zero_shot import ZeroShotScorer

    x, q = unit(20, 64, seed=5), unit(3, 64, seed=6)
    for cosine_map in (None, np.array([[1.0, 1.0, 2.5], [0.0, 0.0, -1.5]], np.float32)):
        model, ours = scorer_lib.zero_shot(64, (20.0, -5.0)), ZeroShotScorer(64, (20.0, -5.0))
        state, our_state = model.init_state(), ours.init_state()
        for frame in x.numpy():
            relevance, score = model.score_frame(state, frame, q.numpy(), cosine_map)
            our_relevance, our_score = ours.score_frame(our_state, frame, q.numpy(), cosine_map)
            assert our_relevance.dtype == np.float32 and our_relevance.shape == (3,)
            np.testing.assert_allclose(our_relevance, relevance, atol=1e-5, rtol=0)  # a few ulps of |logit| <= 25
            assert abs(our_score - score) < 1e-5


def test_a_cosine_map_puts_reference_images_on_sentences_scale_in_forward_and_step():
    """Queries 0 and 1 are sentences, 2 a reference image: its cosine is mapped before the calibration."""
    cosine_map = torch.tensor([[1.0, 1.0, 2.5], [0.0, 0.0, -1.5]])
    x, q = unit(12, 64, seed=3), unit(3, 64, seed=4)
    with torch.no_grad():
        zero_shot = scorer_lib.zero_shot(64, (20.0, -5.0))(x, q, cosine_map)
    cosine = x @ q.T
    torch.testing.assert_close(zero_shot.relevance[:, :2], 20.0 * cosine[:, :2] - 5.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(zero_shot.relevance[:, 2], 20.0 * (2.5 * cosine[:, 2] - 1.5) - 5.0, atol=1e-5, rtol=0)
    model = randomised(ScorerConfig(dim=64, heads=4, layers=2, window=4))
    with torch.no_grad():
        full = model(x, q, cosine_map)
    state = model.init_state()
    steps = torch.stack([model.step(state, frame, q, cosine_map).relevance for frame in x])
    torch.testing.assert_close(steps, full.relevance, atol=3e-5, rtol=0)


def test_checkpoint_round_trip_and_clear_mismatch_errors(tmp_path):
    model = randomised(ScorerConfig(dim=32, heads=2, layers=1, window=6))
    model.shot_prior = ShotPrior({2.0: [[(0.25, 2.0), (0.01, 6.5)]], 8.0: [[(0.1, 4.0)], [(0.2, 3.0)]]})
    path = tmp_path / "scorer.pt"
    scorer_lib.save(model, str(path), encoder_name="clip:tiny:random")
    loaded = scorer_lib.load(str(path), encoder_name="clip:tiny:random", dim=32)
    assert loaded.config == model.config and loaded.shot_prior == model.shot_prior
    x, q = unit(7, 32), unit(2, 32, seed=4)
    with torch.no_grad():  # the same weights, bit for bit, through the same code: exactly the same logits
        torch.testing.assert_close(loaded(x, q).relevance, model(x, q).relevance, atol=0, rtol=0)

    with pytest.raises(CheckpointError, match="expects 32-d embeddings, the encoder gives 512-d"):
        scorer_lib.load(str(path), dim=512)
    with pytest.raises(CheckpointError, match="trained on encoder clip:tiny:random, not conse"):
        scorer_lib.load(str(path), encoder_name="conse")
    payload = torch.load(path, weights_only=True)
    payload["version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format version 99, this cliplive reads 1"):
        scorer_lib.load(str(tmp_path / "future.pt"))
    for malformed in ({8.0: [[(0.1, 0.0)]]}, {8.0: [[]]}, {-1.0: [[(0.1, 1.0)]]}, {8.0: [[(float("nan"), 1.0)]]}, {}, {8.0: "x"}):
        payload = torch.load(path, weights_only=True)
        payload["shot_prior"] = {"shots": malformed}
        torch.save(payload, tmp_path / "prior.pt")
        with pytest.raises(CheckpointError, match="has a malformed shot prior"):
            scorer_lib.load(str(tmp_path / "prior.pt"))
    payload["shot_prior"] = [1, 2]
    torch.save(payload, tmp_path / "prior.pt")
    with pytest.raises(CheckpointError, match="has a malformed shot prior"):
        scorer_lib.load(str(tmp_path / "prior.pt"))
    payload["shot_prior"] = None  # a checkpoint from before shot priors: the segmenter's warm-up rule decides
    torch.save(payload, tmp_path / "older.pt")
    assert scorer_lib.load(str(tmp_path / "older.pt")).shot_prior is None
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a cliplive scorer checkpoint"):
        scorer_lib.load(str(tmp_path / "other.pt"))
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a cliplive scorer checkpoint"):
        scorer_lib.load(str(tmp_path / "junk.pt"))
    with pytest.raises(CheckpointError, match="not found"):
        scorer_lib.load(str(tmp_path / "missing.pt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["future.pt", "junk.pt", "older.pt", "other.pt", "prior.pt", "scorer.pt"]
