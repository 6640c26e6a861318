"""Shared pieces of the train tests: a micro backbone config, batches and shards built from real data.

The micro backbone is an open_clip ViT config (64 px, patch 16, width 32, one layer per tower) that
goes through the same `emotionclip.create_model` path as "tiny" but runs several times faster on
the 2-core CI machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from emotionclip.train import TrainConfig

T = 4  # frames per clip
IMAGE = 64


def micro_backbone(folder: Path, vocab_size: int = 49408) -> str:
    import os

    path = Path(folder) / f"micro-{vocab_size}.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}")  # several ranks may write it at once
    tmp.write_text(
        json.dumps(
            {
                "embed_dim": 32,
                "vision_cfg": {
                    "image_size": IMAGE,
                    "layers": 1,
                    "width": 32,
                    "head_width": 32,
                    "patch_size": 16,
                },
                "text_cfg": {
                    "context_length": 77,
                    "vocab_size": vocab_size,
                    "width": 32,
                    "heads": 1,
                    "layers": 1,
                },
            }
        )
    )
    os.replace(tmp, path)
    return str(path)


def make_batch(seed: int, batch_size: int = 8, sentiment: bool = True, vocab_size: int = 1000) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "video": torch.randn(batch_size, T, 3, IMAGE, IMAGE, generator=g),
        "video_mask": (torch.rand(batch_size, T, IMAGE, IMAGE, generator=g) > 0.5).to(torch.uint8),
        "tokens": torch.randint(1, vocab_size, (batch_size, 77), generator=g),
    }
    if sentiment:
        batch["sentiment_logits"] = torch.randn(batch_size, 7, generator=g) * 2
    return batch


def tiny_config(folder: Path, **overrides) -> TrainConfig:
    """A fast fp32 CPU run of the micro model with learning rates that move it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    values = dict(
        output=str(folder / "run"),
        backbone=micro_backbone(folder, 1000),
        pretrained=None,
        head_layers=1,
        video_len=T,
        batch_size=8,
        precision="fp32",
        device="cpu",
        epochs=1,
        warmup_steps=0,
        log_every=1,
        lr_gain_bias=1e-3,
        lr_weights=1e-3,
        lr_logit_scale=1e-3,
        save_every=0,
        workers=0,
    )
    values.update(overrides)
    return TrainConfig.from_dict(values)


def _jpeg(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_shards(folder: Path, n_shards: int, clips_per_shard: int, frames: int = 6, size: int = 80) -> str:
    """Shards in the prepare stage's format (its own writer), with smooth random frames as JPEG,
    person boxes, subtitles and sentiment logits; returns the brace pattern."""
    from emotionclip.constants import SENTIMENT_CLASSES
    from emotionclip.shards.writer import sample_members, write_tar_atomic

    texts = [
        "I love this, it is great!",
        "Get out, I hate you.",
        "What? No way!",
        "I am so sad today.",
        "That is disgusting.",
        "I'm scared of the dark.",
    ]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for s in range(n_shards):
        members = []
        for c in range(clips_per_shard):
            k = s * clips_per_shard + c
            low = torch.rand(frames, 3, 5, 5, generator=g)
            pixels = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear")
            jpegs = [_jpeg((f * 255).to(torch.uint8).permute(1, 2, 0).numpy()) for f in pixels]
            boxes = [[[10.0, 10.0, size - 20.0, size - 5.0, 0.9]] for _ in range(frames)]
            logits = torch.zeros(len(SENTIMENT_CLASSES))
            logits[k % len(SENTIMENT_CLASSES)] = 4.0
            meta = {
                "video_id": f"vid{s}",
                "start": float(c),
                "end": float(c) + 2.0,
                "sentiment_logits": logits.tolist(),
                "neutral": 0.01,
                "has_person": 1.0,
            }
            members += sample_members(f"vid{s}__c{c:04d}", jpegs, boxes, texts[k % len(texts)], meta)
        write_tar_atomic(folder / f"shard-{s:06d}.tar", members)
    return str(folder / f"shard-{{000000..{n_shards - 1:06d}}}.tar")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_gradients(rank: int, world_size: int, port: int, folder: str, out: str) -> None:
    """One process of a gloo group: gradients of one step on its slice of a fixed global batch,
    for local_loss False and True (gather_with_grad on), saved by rank 0."""
    import os

    if world_size > 1:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            RANK=str(rank),
            WORLD_SIZE=str(world_size),
            LOCAL_RANK=str(rank),
        )
    torch.set_num_threads(1)
    from emotionclip.train.distributed import cleanup, init_distributed
    from emotionclip.train.step import LossSelector, build_model, compute_loss, wrap_model

    env = init_distributed("cpu")
    batch = make_batch(7, batch_size=8)
    per_rank = 8 // world_size
    local = {k: v[rank * per_rank : (rank + 1) * per_rank] for k, v in batch.items()}
    grads = {}
    for local_loss in (False, True):
        cfg = tiny_config(Path(folder), local_loss=local_loss, gather_with_grad=True)
        model = build_model(cfg).eval()  # eval: no dropout, so every layout computes the same function
        ddp = wrap_model(model, cfg, env)  # keep a reference: DDP's gradient hooks die with the wrapper
        loss, _ = compute_loss(ddp, local, LossSelector(cfg, env), "fp32", env.device)
        loss.backward()
        grads[local_loss] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if rank == 0:
        torch.save(grads, out)
    # the whole loop under DDP on the same process group: 3 steps, checkpoint at 2 and at the end
    from emotionclip.train import train

    cfg = tiny_config(Path(folder) / f"ddp{world_size}", batch_size=4, max_steps=3, save_every=2)
    result = train(
        cfg, batches=lambda epoch: [make_batch(10 * epoch + i + rank, batch_size=4) for i in range(5)]
    )
    if rank == 0:
        torch.save({"losses": result.losses, "checkpoint": str(result.checkpoint)}, out + ".train")
    cleanup(env)
