"""CPU inference kernels equal the plain modules, and step aside where they do not apply."""

from __future__ import annotations

import torch

from sam2_video.modeling import cpu_inference
from sam2_video.modeling.cpu_inference import mlp_in_row_blocks
from sam2_video.modeling.memory_attention import MemoryAttentionLayer


def test_mlp_in_row_blocks_equals_plain_mlp(monkeypatch) -> None:
    torch.manual_seed(0)
    monkeypatch.setattr(cpu_inference, "MLP_BLOCK_ROWS", 7)  # several blocks, the last partial
    fc1, fc2 = torch.nn.Linear(12, 40), torch.nn.Linear(40, 12)
    x = torch.randn(2, 25, 12)
    with torch.inference_mode():
        got = mlp_in_row_blocks(x, fc1, torch.relu_, fc2)
        torch.testing.assert_close(got, fc2(torch.relu(fc1(x))), atol=1e-6, rtol=1e-6)
        assert (got - fc2(fc1(x))).abs().max() > 1e-3  # the activation is applied


def test_cpu_inference_only_without_autograd() -> None:
    x = torch.zeros(2)
    assert not cpu_inference.cpu_inference(x)  # grad mode is on in tests by default
    with torch.no_grad():
        assert cpu_inference.cpu_inference(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert not cpu_inference.cpu_inference(x)


def test_memory_attention_layer_blocked_mlp_matches_autograd_path() -> None:
    torch.manual_seed(0)
    layer = MemoryAttentionLayer(
        d_model=32, dim_feedforward=64, num_heads=1, kv_in_dim=16, feat_sizes=(4, 4)
    )
    x, memory, pos = (
        torch.randn(1, 16, 32),
        torch.randn(1, 2 * 16 + 4, 16),
        torch.randn(1, 2 * 16 + 4, 16),
    )
    plain = layer(x, memory, pos, num_obj_ptr_tokens=4)  # grad enabled: plain modules
    with torch.inference_mode():
        blocked = layer(x, memory, pos, num_obj_ptr_tokens=4)
    torch.testing.assert_close(blocked, plain.detach(), atol=1e-5, rtol=1e-5)
