"""The causal language-guided scorer: CLIP-It's frame scorer, made causal and streamable.

Per sampled frame:
  1. language-guided attention: the frame embedding is the query; each sentence (or reference image)
     is its own key/value token, so relevance stays attributable per query;
  2. a frame-scoring transformer over a sliding window of the last W frames, with a causal band mask
     (each frame sees itself and the W-1 before it) and ALiBi distance biases, so there are no
     absolute positions and a stream can run forever;
  3. heads: relevance per query = calibrated cosine + learned residual (a reference image's cosine is
     first mapped onto sentences' scale: `cliplive.models.encoder.Encoder.image_calibration`), aggregate = max over queries
     + learned residual. Both residual heads start at zero, so an untrained scorer is exactly
     zero-shot CLIP scoring and training (issue: train) only learns corrections.

`step()` keeps per-layer key/value caches of the last W-1 frames: a new frame costs O(W), and its
outputs equal `forward()` over the same frames (tested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from cliplive.models.embedding import CLIP_CALIBRATION
from cliplive.models.errors import InputError
from cliplive.models.shots import ShotPrior

FORMAT = "cliplive.scorer"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ScorerConfig:
    dim: int = 512  # embedding size of the encoder
    heads: int = 8
    layers: int = 2
    window: int = 32  # frames each frame can attend to (itself included); 16 s at 2 fps
    mlp_ratio: int = 4
    logit_scale: float = CLIP_CALIBRATION[0]  # zero-shot calibration: relevance = scale * cosine + bias
    logit_bias: float = CLIP_CALIBRATION[1]


@dataclass
class ScorerOutput:
    relevance: torch.Tensor  # (..., T, Q) logits: sigmoid gives P(frame matches query)
    score: torch.Tensor  # (..., T) aggregate logit


@dataclass
class ScorerState:
    """Incremental state: per layer, keys and values of the last W-1 frames."""

    keys: list[torch.Tensor] = field(default_factory=list)  # per layer (heads, <=W-1, head_dim)
    values: list[torch.Tensor] = field(default_factory=list)


class LanguageGuidedAttention(nn.Module):
    """Frames attend to query tokens (one per sentence/reference image); output added to the frame."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, frames: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        # frames (..., T, D), queries (Q, D)
        q = _split_heads(self.q(self.norm(frames)), self.heads)  # (..., H, T, d)
        k, v = (_split_heads(t, self.heads) for t in self.kv(queries).chunk(2, dim=-1))  # (H, Q, d)
        attended = F.scaled_dot_product_attention(q, k, v)
        return frames + self.out(_merge_heads(attended))


class CausalBlock(nn.Module):
    """Pre-norm transformer block whose attention sees only the last `window` frames."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tuple(_split_heads(t, self.heads) for t in self.qkv(self.norm1(x)).chunk(3, dim=-1))

    def finish(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor):
        x = x + self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=bias)))
        return x + self.mlp(self.norm2(x))


class CausalScorer(nn.Module):
    def __init__(self, config: ScorerConfig = ScorerConfig()):
        super().__init__()
        self.config = config
        self.shot_prior: ShotPrior | None = None  # its training videos' shots (set by training); None: untrained, or older
        dim = config.dim
        self.guide = LanguageGuidedAttention(dim, config.heads)
        self.blocks = nn.ModuleList(CausalBlock(dim, config.heads, config.mlp_ratio) for _ in range(config.layers))
        self.norm = nn.LayerNorm(dim)
        self.relevance_head = nn.Linear(dim, dim)  # residual relevance = <W h_t, e_q>
        self.score_head = nn.Linear(dim, 1)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale)))
        self.logit_bias = nn.Parameter(torch.tensor(float(config.logit_bias)))
        # ALiBi slopes (Press et al. 2022): a geometric sequence per head.
        self.register_buffer("slopes", torch.tensor([2 ** (-8 * (i + 1) / config.heads) for i in range(config.heads)]))
        for head in (self.relevance_head, self.score_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def forward(self, frames: torch.Tensor, queries: torch.Tensor, cosine_map: torch.Tensor | None = None) -> ScorerOutput:
        """Full causal pass. frames (..., T, D) unit vectors, queries (Q, D) unit vectors; `cosine_map` (2, Q):
        each query's gain and offset that put its cosines on sentences' scale (None: all are sentences)."""
        t = frames.shape[-2]
        pos = torch.arange(t, device=frames.device)
        distance = pos[:, None] - pos[None, :]  # query index minus key index
        bias = self._alibi(distance).masked_fill(~self._visible(distance), float("-inf"))
        x = self.guide(frames, queries)
        for block in self.blocks:
            q, k, v = block.qkv_heads(x)
            x = block.finish(x, q, k, v, bias)
        return self._heads(x, frames, queries, cosine_map)

    def init_state(self) -> ScorerState:
        return ScorerState()

    @torch.inference_mode()
    def step(
        self, state: ScorerState, frame: torch.Tensor, queries: torch.Tensor, cosine_map: torch.Tensor | None = None
    ) -> ScorerOutput:
        """One new frame (D,) -> outputs for it (as `forward`), updating `state` in place. O(W) per frame."""
        x = self.guide(frame[None], queries)  # (1, D)
        keep = self.config.window - 1
        for i, block in enumerate(self.blocks):
            q, k, v = block.qkv_heads(x)  # (H, 1, d)
            if i == len(state.keys):
                state.keys.append(k[:, :0])
                state.values.append(v[:, :0])
            k_all = torch.cat([state.keys[i], k], dim=1)
            v_all = torch.cat([state.values[i], v], dim=1)
            state.keys[i] = k_all[:, max(k_all.shape[1] - keep, 0) :]
            state.values[i] = v_all[:, max(v_all.shape[1] - keep, 0) :]
            distance = torch.arange(k_all.shape[1] - 1, -1, -1, device=x.device)[None, :]
            x = block.finish(x, q, k_all, v_all, self._alibi(distance))
        out = self._heads(x, frame[None], queries, cosine_map)
        return ScorerOutput(out.relevance[0], out.score[0])

    def score_frame(self, state: ScorerState, frame, queries, cosine_map=None) -> tuple:
        """`step` on numpy arrays, as a stream's Highlighter calls every scorer (`FrameScorer`)."""
        out = self.step(state, torch.from_numpy(frame), torch.from_numpy(queries),
                        None if cosine_map is None else torch.from_numpy(cosine_map))
        return out.relevance.numpy(), float(out.score)

    def _visible(self, distance: torch.Tensor) -> torch.Tensor:
        """Which keys each frame attends to: itself and the W-1 frames before it."""
        return (distance >= 0) & (distance < self.config.window)

    def _alibi(self, distance: torch.Tensor) -> torch.Tensor:
        """(Tq, Tk) distances -> (H, Tq, Tk) additive attention bias, growing with distance either way."""
        return -self.slopes[:, None, None] * distance.abs().to(self.slopes.dtype)

    def _heads(self, x: torch.Tensor, frames: torch.Tensor, queries: torch.Tensor, cosine_map: torch.Tensor | None) -> ScorerOutput:
        h = self.norm(x)
        cosine = frames @ queries.T  # (..., T, Q)
        if cosine_map is not None:
            cosine = cosine_map[0] * cosine + cosine_map[1]
        relevance = self.logit_scale * cosine + self.logit_bias + self.relevance_head(h) @ queries.T
        score = relevance.max(dim=-1).values + self.score_head(h).squeeze(-1)
        return ScorerOutput(relevance, score)


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(-3, -2).flatten(-2)


# --- checkpoints -------------------------------------------------------------------------------


class CheckpointError(InputError):
    """A scorer checkpoint that is missing, not ours, or does not fit the encoder."""


def zero_shot(dim: int, calibration: tuple[float, float], **overrides) -> CausalScorer:
    """An untrained scorer whose relevance is the encoder's calibrated cosine: what training starts from.
    A stream without a trained scorer runs `cliplive.models.zero_shot.ZeroShotScorer`, its numpy equal."""
    config = ScorerConfig(dim=dim, logit_scale=calibration[0], logit_bias=calibration[1], **overrides)
    return CausalScorer(config).eval()


def save(scorer: CausalScorer, path: str, encoder_name: str, extra: dict | None = None) -> None:
    from cliplive.models.files import atomic_path

    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": asdict(scorer.config),
        "encoder": encoder_name,
        "state_dict": scorer.state_dict(),
        "shot_prior": None if scorer.shot_prior is None else scorer.shot_prior.to_payload(),
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str, encoder_name: str | None = None, dim: int | None = None) -> CausalScorer:
    """Load a checkpoint; a wrong format, version, encoder or embedding size fails with a clear message."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"scorer checkpoint not found: {path}") from None
    except Exception as e:
        raise CheckpointError(f"not a cliplive scorer checkpoint: {path} ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"not a cliplive scorer checkpoint: {path}")
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"scorer checkpoint {path} has format version {payload.get('version')}, this cliplive reads {FORMAT_VERSION}"
        )
    config = ScorerConfig(**payload["config"])
    if dim is not None and config.dim != dim:
        raise CheckpointError(f"scorer checkpoint {path} expects {config.dim}-d embeddings, the encoder gives {dim}-d")
    if encoder_name is not None and payload.get("encoder") not in (None, encoder_name):
        raise CheckpointError(
            f"scorer checkpoint {path} was trained on encoder {payload['encoder']}, not {encoder_name}"
        )
    scorer = CausalScorer(config)
    scorer.load_state_dict(payload["state_dict"])
    if payload.get("shot_prior") is not None:
        try:
            scorer.shot_prior = ShotPrior.from_payload(payload["shot_prior"], f"scorer checkpoint {path}")
        except InputError as e:
            raise CheckpointError(str(e)) from None
    return scorer.eval()
