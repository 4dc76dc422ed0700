"""Tiny random-weight detectors saved to a folder, as users' real ones would be (no network)."""

from __future__ import annotations

from pathlib import Path

import torch

GD_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", "person", "car", "dog", "truck"]


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """A Grounding DINO with a 2-stage-wide Swin and a 1-layer BERT, and its processor (a BERT
    tokenizer over `GD_WORDS`), saved with `save_pretrained` into `folder`."""
    from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(GD_WORDS) + "\n")
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": 128, "longest_edge": 128}
        ),
        tokenizer=BertTokenizer(str(vocab)),
    )
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            image_size=128,
            out_indices=[2, 3, 4],
        ),
        text_config=BertConfig(
            vocab_size=len(GD_WORDS),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
        ),
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,  # the box heads of layers 1.. are tied to layer 0's
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=30,
        num_feature_levels=3,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=32,
        use_timm_backbone=False,
    )
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
