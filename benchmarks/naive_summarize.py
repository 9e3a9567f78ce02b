"""The baseline that benchmarks/summarize.py times `cliplive summarize` against: the plain way to score a
video's frames with CLIP, as open_clip's README shows it. Decode every frame with PyAV, keep every 15th,
PIL + open_clip's transform, encode one frame at a time, keep the best-scoring 15% of the kept frames.

    python benchmarks/naive_summarize.py VIDEO "a sentence" [--model ViT-B-32] [--pretrained CHECKPOINT]
"""

from __future__ import annotations

import argparse
import json

import av
import open_clip
import torch

EVERY = 15
BUDGET = 0.15


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("video")
    parser.add_argument("sentence")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--pretrained", default=None, help="a checkpoint file (default: random weights)")
    args = parser.parse_args()

    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=args.pretrained)
    model.eval()
    tokenizer = open_clip.get_tokenizer(args.model)
    with torch.no_grad():
        text = model.encode_text(tokenizer([args.sentence]))
        text = text / text.norm(dim=-1, keepdim=True)

    times, scores = [], []
    with av.open(args.video) as container:
        stream = container.streams.video[0]
        for index, frame in enumerate(container.decode(stream)):
            if index % EVERY:
                continue
            image = preprocess(frame.to_image())[None]
            with torch.no_grad():
                embedding = model.encode_image(image)
                embedding = embedding / embedding.norm(dim=-1, keepdim=True)
            times.append(float(frame.pts * stream.time_base))
            scores.append(float(embedding @ text.T))

    kept = sorted(range(len(scores)), key=lambda i: -scores[i])[: max(1, round(BUDGET * len(scores)))]
    print(json.dumps({"frames": len(scores), "kept": sorted(times[i] for i in kept)}))


if __name__ == "__main__":
    main()
