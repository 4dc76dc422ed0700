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


OWL_WORDS = ["person", "car", "dog"]


def save_tiny_owlv2(folder: Path, seed: int = 0) -> Path:
    """An OWLv2 with 1-layer text and vision towers on 64x64 inputs (16 patch queries), and its
    processor (a CLIP BPE tokenizer whose vocabulary spells `OWL_WORDS`), saved into `folder`."""
    import json

    from sam2_video.detect.torchvision_compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    from transformers import (
        CLIPTokenizer,
        Owlv2Config,
        Owlv2ForObjectDetection,
        Owlv2ImageProcessor,
        Owlv2Processor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    merges = []
    for c in sorted({c for w in OWL_WORDS for c in w}):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    for word in OWL_WORDS:  # merge left to right until the word is one token
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append(f"{parts[0]} {parts[1]}")
            parts = [parts[0] + parts[1], *parts[2:]]
            vocab.setdefault(parts[0], len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!")
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    config = Owlv2Config(
        text_config={
            "vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 16,
            "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
            "num_attention_heads": 2, "image_size": 64, "patch_size": 16,
        },
        projection_dim=32,
    )  # fmt: skip
    torch.manual_seed(seed)
    Owlv2ForObjectDetection(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
