"""What-if experiment: streaming latency with RoPE computed as one complex multiply.

`sam2_video.modeling.rope.apply_rope` rotates channel pairs with real cos/sin tables
(unbind, four products, stack). With many objects the keys of every memory frame are rotated,
so this elementwise work grows with the object count. This script times the `latency` section
of `bench_stream.py` three times: as is, with `apply_rope` swapped (in this process only) for
a complex-multiply version that gives the same values to ~1e-6, and as is again, to measure
what such a change in the model code would buy. It does not change the library.

  python bench/experiment_rope.py --objects 1 16 --threads 1
"""

from __future__ import annotations

import argparse

import bench_stream
import torch
from common import load_model, machine_info, write_json
from torch import Tensor

from sam2_video.modeling import memory_attention


def complex_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Same contract as `apply_rope`: x (..., N, D), cos/sin (N, D/2) -> rotated (..., N, D)."""
    pairs = torch.view_as_complex(x.float().unflatten(-1, (-1, 2)).contiguous())  # (..., N, D/2)
    rotated = pairs * torch.complex(cos, sin)
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_micro")
    parser.add_argument("--objects", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # The fields bench_stream.bench_latency reads.
    args.frame_size = (480, 640)
    args.static_shapes = False
    args.max_conditioning_frames = 4
    device = torch.device("cpu")
    model, _ = load_model(args.config, None, device)
    original = memory_attention.apply_rope
    results = {"machine": machine_info(device)}
    # A / B / A: load swings on a shared machine show up as a difference between the two As.
    with torch.inference_mode():
        variants = (("library", original), ("complex", complex_rope), ("again", original))
        for name, rope in variants:
            print(f"\napply_rope: {name}")
            memory_attention.apply_rope = rope
            try:
                results[name] = bench_stream.bench_latency(model, device, args)
            finally:
                memory_attention.apply_rope = original
    write_json(args.json, results)


if __name__ == "__main__":
    main()
