"""Numeric precision of inference: `auto | fp32 | bf16 | fp16`, resolved per device.

The official SAM 2 runs under `torch.autocast("cuda", dtype=torch.bfloat16)` with TF32 matmuls
and convolutions; in fp32 its attention gets neither flash nor cuDNN kernels and runs several
times slower. `auto` does the same on CUDA and stays fp32 on the CPU (where bf16 is a choice:
docs/benchmarks.md, "bf16 on the CPU").

`build_sam2(precision=...)` stores the choice on `model.precision` (and sets TF32 for CUDA);
`model_precision(model)` resolves it for the device the model is on. The predictors enter
`inference(model)` at their public entry points (`inference_method`), the one place where
autocast wraps the work:

    model = build_sam2("sam2.1_hiera_t", ckpt, device="cuda", precision="auto")
    with inference(model):            # inference mode + bf16 autocast on CUDA
        ...
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

import torch

logger = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


class Precision(str, enum.Enum):
    """What a user asks for. AUTO: bf16 autocast + TF32 on CUDA, fp32 on the CPU."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


PRECISION_CHOICES = tuple(p.value for p in Precision)


@dataclass(frozen=True)
class ResolvedPrecision:
    """The precision a model runs with on its device.

    device_type: "cuda" / "cpu" (autocast's device type).
    autocast_dtype: torch.bfloat16 / torch.float16 under autocast; None runs fp32.
    tf32: TF32 matmuls and cuDNN convolutions (CUDA only).
    """

    device_type: str
    autocast_dtype: torch.dtype | None
    tf32: bool

    @property
    def name(self) -> str:
        """ "fp32", "fp32+tf32", "bf16+tf32", "bf16", "fp16", ..."""
        base = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]
        return base + ("+tf32" if self.tf32 else "")


def resolve_precision(precision: Precision | str, device: torch.device | str) -> ResolvedPrecision:
    """What `precision` means on `device`.

    auto: CUDA -> bf16 autocast + TF32 (fp16 on GPUs without bf16), CPU -> fp32.
    fp32: plain fp32 (TF32 off on CUDA, so fp32 results are fp32 results).
    bf16 / fp16: autocast to that dtype (+ TF32 for the ops autocast leaves in fp32 on CUDA).
    Raises ValueError for an unknown name.
    """
    try:
        wanted = Precision(precision)
    except ValueError:
        raise ValueError(
            f"unknown precision {precision!r} (choose from {', '.join(PRECISION_CHOICES)})"
        ) from None
    device_type = torch.device(device).type
    cuda = device_type == "cuda"
    if wanted is Precision.AUTO:
        if not cuda:
            return ResolvedPrecision(device_type, None, False)
        # Pre-Ampere GPUs have no bf16; without a GPU to ask (a CPU-only build), assume one.
        bf16 = not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
        return ResolvedPrecision(device_type, torch.bfloat16 if bf16 else torch.float16, True)
    if wanted is Precision.FP32:
        return ResolvedPrecision(device_type, None, False)
    dtype = torch.bfloat16 if wanted is Precision.BF16 else torch.float16
    return ResolvedPrecision(device_type, dtype, cuda)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has bf16 matrix instructions (AMX tiles or AVX512-BF16), where
    `precision="bf16"` runs much faster than fp32 (docs/benchmarks.md, "bf16 on the CPU")."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(torch.cpu, name)()) for name in probes if hasattr(torch.cpu, name))
    except RuntimeError:  # a torch build without the probes' CPU support
        return False


def apply_tf32(resolved: ResolvedPrecision) -> None:
    """Set torch's TF32 switches (process-wide) for a CUDA precision; no-op on the CPU.

    Note cuDNN convolutions default to TF32: fp32 turns it off explicitly.
    """
    if resolved.device_type != "cuda":
        return
    torch.backends.cuda.matmul.allow_tf32 = resolved.tf32
    torch.backends.cudnn.allow_tf32 = resolved.tf32


def model_precision(model: torch.nn.Module) -> ResolvedPrecision:
    """The precision `model` runs with: its `precision` setting (`build_sam2(precision=...)`;
    fp32 for a model built otherwise) resolved for the device it is on now."""
    wanted = getattr(model, "precision", Precision.FP32)
    device = cast(torch.device, model.device)  # SAM2Model.device (no import cycle here)
    return resolve_precision(wanted, device)


@contextlib.contextmanager
def autocast(resolved: ResolvedPrecision) -> Iterator[None]:
    """`torch.autocast` for a resolved precision; nothing for fp32."""
    if resolved.autocast_dtype is None:
        yield
        return
    with torch.autocast(resolved.device_type, dtype=resolved.autocast_dtype):
        yield


@contextlib.contextmanager
def inference(model: torch.nn.Module | None) -> Iterator[None]:
    """Inference mode plus the model's autocast: what every predictor entry point runs in
    (inference mode alone without a model, e.g. a stand-in predictor in tests)."""
    with torch.inference_mode():
        if model is None:
            yield
            return
        with autocast(model_precision(model)):
            yield


def inference_method(method: _F) -> _F:
    """Decorator for predictor methods: runs `method` in `inference(self.model)`.

    A generator method runs each of its steps inside the context (as `torch.inference_mode()`
    does as a decorator), so sliced work resumed later still runs under autocast.
    """
    if inspect.isgeneratorfunction(method):

        @wraps(method)
        def steps(self: Any, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            gen = method(self, *args, **kwargs)
            try:
                with inference(self.model):
                    response = gen.send(None)
                while True:
                    try:
                        request = yield response
                    except GeneratorExit:
                        with inference(self.model):
                            gen.close()
                        raise
                    except BaseException as exc:  # noqa: BLE001 - forwarded into the generator
                        with inference(self.model):
                            response = gen.throw(exc)
                    else:
                        with inference(self.model):
                            response = gen.send(request)
            except StopIteration as stop:
                return stop.value

        return steps  # type: ignore[return-value]

    @wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with inference(self.model):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
