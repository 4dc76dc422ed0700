"""Per-object chunk sizes for the tracker's mask decoder and memory encoder (issue 11).

Batching B objects through the mask decoder and the memory encoder shares the frame's work,
but at full size the batch's activations (e.g. (B, 256, 64, 64) tokens, a (B, 4096, 2048) MLP
intermediate) outgrow the CPU caches. This script times both modules on one frame for B
objects run in chunks of 1, 2, 4, ... (interleaved, CPU time, random features of the model's
real shapes) and prints the fastest chunk per module: `sam2_video/tracking/tracker.py` keeps the
measured choice in `OBJECT_CHUNKS`.

  python bench/calibrate_chunks.py --config sam2.1_hiera_t --objects 16 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

# The checkout this script lives in is the one measured (not another editable install).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import load_model, machine_info, print_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="sam2.1_hiera_t")
    parser.add_argument("--objects", type=int, default=16)
    parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, _ = load_model(args.config, None, torch.device("cpu"))
    s = model.image_size
    c = model.hidden_dim
    g = torch.Generator().manual_seed(0)
    n = args.objects
    pix = torch.randn(n, c, s // 16, s // 16, generator=g)
    embed = torch.randn(1, c, s // 16, s // 16, generator=g)
    high = [
        torch.randn(1, c // 8, s // 4, s // 4, generator=g),
        torch.randn(1, c // 4, s // 8, s // 8, generator=g),
    ]
    masks = torch.randn(n, 1, s, s, generator=g)
    scores = torch.randn(n, 1, generator=g)

    def decoder(lo: int, hi: int) -> None:
        model.forward_sam_heads(
            pix[lo:hi], [h.expand(hi - lo, -1, -1, -1) for h in high], multimask_output=True
        )

    def encoder(lo: int, hi: int) -> None:
        model.encode_memory(embed, masks[lo:hi], scores[lo:hi], binarize=False)

    times = {(m, k): 0.0 for m in ("decoder", "memory_encoder") for k in args.chunks}
    with torch.inference_mode():
        for rep in range(args.repeats + 1):  # the first round warms up
            for k in args.chunks:
                for name, fn in (("decoder", decoder), ("memory_encoder", encoder)):
                    start = time.process_time()
                    for lo in range(0, n, k):
                        fn(lo, min(lo + k, n))
                    if rep:
                        times[(name, k)] += (time.process_time() - start) / args.repeats
    rows = [
        {
            "module": m,
            "chunk": k,
            "cpu_s": round(t, 3),
            "x_best": round(t / min(v for (mm, _), v in times.items() if mm == m), 2),
        }
        for (m, k), t in times.items()
    ]
    print(f"# {args.config}, {n} objects, {machine_info(torch.device('cpu'))['cpu']}")
    print_table(rows, ["module", "chunk", "cpu_s", "x_best"])
    write_json(
        args.json, {"machine": machine_info(torch.device("cpu")), "args": vars(args), "rows": rows}
    )


if __name__ == "__main__":
    main()
