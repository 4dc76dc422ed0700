"""CPU memory cross-attention: SDPA over projected values vs. values folded after the softmax.

`sam2_video.modeling.folded_values` attends to the 64-channel memory tokens and applies the value
projection to the outputs (exact up to rounding, see there). This script times one cross-attention
call both ways for the memory-bank sizes of the micro model (256 queries) and of the full-size
models (4096 queries), with several query x key block sizes, so that `QUERY_BLOCK` and
`KEY_BLOCK` can be re-chosen on another CPU.

  python bench/bench_memory_attention.py --json bench/results/2026-12-01/memory_attention.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine_info, print_table, write_json

from sam2_video.modeling import folded_values
from sam2_video.modeling.folded_values import attend_folded_values

DEFAULT_BLOCKS = (folded_values.QUERY_BLOCK, folded_values.KEY_BLOCK)

# (name, queries, memory frames, pointer tokens): a 7-frame bank is the steady state.
CASES = (
    ("micro 7 frames", 256, 7, 64),
    ("1024 input, 2 frames", 4096, 2, 16),
    ("1024 input, 7 frames", 4096, 7, 64),
)


def cpu_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best * 1e3


def time_case(num_q: int, num_k: int, v_proj: torch.nn.Linear, repeats: int) -> dict:
    """One cross-attention call (1 object): SDPA on projected values, then folded values at
    several query-block budgets; and the largest difference between the two outputs."""
    dim, mem_dim = v_proj.out_features, v_proj.in_features
    q, k = torch.randn(1, 1, num_q, dim), torch.randn(1, 1, num_k, dim)
    memory = torch.randn(1, num_k, mem_dim)
    row = {
        "sdpa_ms": round(
            cpu_ms(
                lambda: F.scaled_dot_product_attention(q, k, v_proj(memory).unsqueeze(1)), repeats
            ),
            1,
        )
    }
    for queries, keys in ((256, 1 << 30), (128, 1 << 30), (512, 2048), (512, 4096), (256, 4096)):
        folded_values.QUERY_BLOCK, folded_values.KEY_BLOCK = queries, keys
        ms = cpu_ms(lambda: attend_folded_values(q, k, memory, v_proj), repeats)
        row[f"folded_{queries}x{keys if keys < 1 << 30 else 'all'}_ms"] = round(ms, 1)
    folded_values.QUERY_BLOCK, folded_values.KEY_BLOCK = DEFAULT_BLOCKS
    want = F.scaled_dot_product_attention(q, k, v_proj(memory).unsqueeze(1))
    row["max_abs_diff"] = (
        f"{(attend_folded_values(q, k, memory, v_proj) - want).abs().max().item():.1e}"
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    v_proj = torch.nn.Linear(64, 256)  # the memory attention's 64 -> 256 channels
    rows = []
    with torch.inference_mode():
        for name, num_q, frames, pointers in CASES:
            num_k = frames * num_q + pointers
            row = {"case": name, "keys": num_k}
            row.update(time_case(num_q, num_k, v_proj, args.repeats))
            rows.append(row)
            print(row, flush=True)
    info = machine_info(torch.device("cpu"))
    print(
        f"# {info['cpu']}, {args.threads} thread(s), torch {info['torch']}, "
        f"load {info['load_avg_1_5_15']}"
    )
    print_table(rows, list(rows[0]))
    write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
