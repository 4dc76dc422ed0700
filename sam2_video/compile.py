"""The `vos_optimized` mode: the network's five components under `torch.compile`.

`compile_model(model)` replaces the `forward` of each component listed in `VOS_OPTIMIZED` by its
compiled version, on the model itself (no subclass, no copied methods; the state dict is
unchanged), and returns a `CompiledParts` handle that reports which parts run compiled and can
restore the eager forwards. A part whose spec's `eager_on` names the model's device stays eager:
on the CPU the image encoder, whose eager kernels are faster than its compiled graph.

Compiled graphs are specialised to tensor shapes. Steady-state streaming runs without
recompiling when the tracker feeds fixed shapes::

    parts = compile_model(model)
    tracker = FrameTracker(model, static_shapes=StaticShapes(max_conditioning_frames=4))
    # or: StreamingSession(model, SessionOptions(static_shapes=True))

The first frames compile (seconds to minutes); new object counts compile once per batch bucket
(1, 2, 4, ... 64 objects, then multiples of 64). `sam2_video.warmup.warm_up` compiles every
bucket ahead of time (the service does it before it reports ready), and the inductor cache
lives on disk (`enable_disk_cache`) so that a restart loads the kernels instead of compiling.

If compiling a part fails (no C compiler, out of memory, the recompile limit, ...), that part
runs eagerly from then on: a slower model, never a broken one; but never silently: the
failure is logged as an ERROR, `CompiledParts.fallbacks()` lists it (the service shows it in
/metrics and /readyz), and `compile_model(..., on_failure="raise")` raises instead.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sam2_video.modeling.sam2 import SAM2Model

logger = logging.getLogger(__name__)

# Graphs one compiled part keeps per batch bucket: tracking, prompts (with and without a mask
# input, a box) and the frame-batch variants; the prompt's point count P turns symbolic once
# it varies (dynamic=None parts). Above the limit dynamo would run the part eagerly:
# `recompile_limit` sizes it from the buckets a deployment can reach.
GRAPHS_PER_BUCKET = 3
# Floor of the limit (torch's default is 8).
RECOMPILE_LIMIT = 16


class CompileFailedError(RuntimeError):
    """A part failed to compile and `compile_model(..., on_failure="raise")` was asked."""


def recompile_limit(buckets: Sequence[int]) -> int:
    """Graphs per compiled part to allow for `buckets` (object-row batch sizes)."""
    return max(RECOMPILE_LIMIT, GRAPHS_PER_BUCKET * len(buckets) + 4)


def enable_disk_cache(directory: str | Path | None = None) -> Path:
    """Keep inductor's compiled kernels (and FX graphs) on disk, so a restart reuses them.

    directory: default `$TORCHINDUCTOR_CACHE_DIR`, else `~/.cache/sam2-stream/inductor`.
    Sets the environment variable (read by inductor when it first compiles) and the FX graph
    cache switch; returns the directory.
    """
    path = Path(
        directory
        or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        or Path.home() / ".cache" / "sam2-stream" / "inductor"
    )
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    return path


@dataclass(frozen=True)
class CompileSpec:
    """How one component of `SAM2Model` is compiled.

    name: the component's attribute on the model (its state-dict prefix).
    dynamic: `torch.compile(dynamic=...)`: False = one graph per input shape, None = static
        first and dimensions seen changing become symbolic, True = symbolic from the start.
    fullgraph: fail (and fall back to eager) rather than split the forward at a graph break.
    reason: why this `dynamic` choice.
    eager_on: device types on which the part is left eager, because its eager kernels are
        faster there than the compiled graph (which runs the plain modules).
    """

    name: str
    dynamic: bool | None
    reason: str
    fullgraph: bool = True
    eager_on: tuple[str, ...] = ()


VOS_OPTIMIZED: tuple[CompileSpec, ...] = (
    CompileSpec(
        "image_encoder",
        dynamic=False,
        reason="one frame at the fixed model input size per call: shapes never change",
        # The CPU trunk's blocked MLP, chunked window attention and 1x1 convs as matmuls run
        # only eagerly; per frame of the micro video predictor, one thread of a 2-core AMD
        # EPYC: eager 28.3 ms, compiled 30.0 ms (the other four parts gain 1-1.2 ms each).
        eager_on=("cpu",),
    ),
    CompileSpec(
        "memory_encoder",
        dynamic=False,
        reason="static shapes: masks at the input size, batch padded to object buckets",
    ),
    CompileSpec(
        "memory_attention",
        dynamic=False,
        reason="static shapes: bank padded to a fixed length (with a mask), batch to buckets",
    ),
    CompileSpec(
        "sam_prompt_encoder",
        dynamic=None,
        reason="tracking sends 1 padding point but clicks send P: P turns symbolic once it varies",
    ),
    CompileSpec(
        "sam_mask_decoder",
        dynamic=False,
        reason="one graph per shape, as the official compiles it: it reports an accuracy "
        "regression with dynamic=True; clicks with a new point count compile once more",
    ),
)


def default_mode(device: torch.device) -> str:
    """`torch.compile` mode for a device.

    CUDA: autotuned kernels without CUDA graphs (a graph replay overwrites its output buffers,
    which the memory bank keeps across frames). CPU: "default" (autotuning CPU GEMM templates
    costs minutes of compile for little gain on these small matrices).
    """
    return "max-autotune-no-cudagraphs" if device.type == "cuda" else "default"


class _GuardedForward:
    """A compiled forward that falls back, for good, to the eager one if compiling fails
    (logged as an ERROR; or raised with `raise_on_failure`).

    Errors raised by the eager forward too (bad inputs) are re-raised and keep the compiled path.
    """

    def __init__(
        self,
        name: str,
        eager: Callable[..., Any],
        compiled: Callable[..., Any],
        raise_on_failure: bool = False,
    ) -> None:
        self.name = name
        self.eager = eager
        self.compiled = compiled
        self.raise_on_failure = raise_on_failure
        self.error: str | None = None  # why this part fell back to eager, None while compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.error is not None:
            return self.eager(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler failure falls back
            compile_error = exc
        # Outside the except block: an input error raised here is not chained to the compiler's.
        result = self.eager(*args, **kwargs)
        error = f"{type(compile_error).__name__}: {compile_error}"
        if self.raise_on_failure:
            raise CompileFailedError(f"torch.compile of {self.name} failed: {error}")
        self.error = error
        logger.error(
            "torch.compile of %s failed; running it EAGERLY from now on (%s)",
            self.name,
            error.splitlines()[0] if error else type(compile_error).__name__,
        )
        return result


def _guarded_forward(module: nn.Module) -> _GuardedForward | None:
    """The compiled forward installed on `module` by `compile_model`, if any."""
    forward = module.__dict__.get("forward")
    return forward if isinstance(forward, _GuardedForward) else None


@dataclass
class CompiledParts:
    """Handle on a model whose components were compiled by `compile_model`."""

    model: SAM2Model
    mode: str
    specs: tuple[CompileSpec, ...]
    _forwards: dict[str, _GuardedForward] = field(default_factory=dict, repr=False)
    warmup: Any = None  # the `sam2_video.warmup.WarmupReport` of the last warm-up, if any

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def fallbacks(self) -> dict[str, str]:
        """Parts that failed to compile and run eagerly -> the error."""
        return {name: fwd.error for name, fwd in self._forwards.items() if fwd.error is not None}

    def status(self) -> dict[str, Any]:
        """What /readyz and /metrics report: mode, compiled parts, fallbacks, the warm-up."""
        warmup = self.warmup
        return {
            "mode": self.mode,
            "parts": self.names,
            "fallbacks": self.fallbacks(),
            "warmup": None if warmup is None else warmup.as_dict(),
        }

    def restore(self) -> None:
        """Put the eager forwards back (compiled graphs are dropped with the wrappers)."""
        for name, forward in self._forwards.items():
            module = getattr(self.model, name)
            if _guarded_forward(module) is forward:
                del module.forward
        self._forwards.clear()
        _HANDLES.pop(self.model, None)


# The handle of each compiled model (the service reads it back for /readyz and /metrics).
_HANDLES: weakref.WeakKeyDictionary[SAM2Model, CompiledParts] = weakref.WeakKeyDictionary()


def compiled_parts(model: SAM2Model) -> CompiledParts | None:
    """The handle `compile_model` returned for `model`, or None for an eager model."""
    return _HANDLES.get(model)


def compile_model(
    model: SAM2Model,
    *,
    mode: str | None = None,
    parts: Sequence[CompileSpec] = VOS_OPTIMIZED,
    backend: str | Callable[..., Any] = "inductor",
    buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    on_failure: str = "eager",
) -> CompiledParts:
    """Compile the `forward` of each part of `model` in place (`vos_optimized` by default).

    mode: `torch.compile` mode; None picks `default_mode(model.device)`.
    parts: which components and how (see `VOS_OPTIMIZED`); pass a subset or
        `dataclasses.replace`d specs to experiment. Parts whose `eager_on` lists the model's
        device type stay eager (`handle.names` lists the compiled ones).
    backend: `torch.compile` backend: "inductor", or e.g. "eager" to check graphs and guards
        without code generation.
    buckets: the object-row batch sizes the tracker pads to (`StaticShapes.buckets_up_to`):
        torch's limit of graphs per function (global) is raised to `recompile_limit(buckets)`.
    on_failure: "eager" (a failing part runs eagerly; ERROR log, `fallbacks()`) or "raise"
        (`CompileFailedError` from the call that compiled).
    Nothing is compiled until the first call (`sam2_video.warmup.warm_up` compiles ahead).
    Compiling an already compiled part raises ValueError.
    """
    if on_failure not in ("eager", "raise"):
        raise ValueError(f"on_failure must be 'eager' or 'raise', got {on_failure!r}")
    mode = mode or default_mode(model.device)
    parts = [spec for spec in parts if model.device.type not in spec.eager_on]
    handle = CompiledParts(model=model, mode=mode, specs=tuple(parts))
    children = dict(model.named_children())
    for spec in parts:
        if spec.name not in children:
            raise ValueError(f"SAM2Model has no component {spec.name!r} to compile")
        if _guarded_forward(children[spec.name]) is not None:
            raise ValueError(f"{spec.name} is already compiled (call restore() first)")
    dynamo_config = torch._dynamo.config
    limit = recompile_limit(buckets)
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, limit)
    # Graphs per part over its whole life: a part with a new shape in every bucket must not hit it.
    dynamo_config.accumulated_recompile_limit = max(
        dynamo_config.accumulated_recompile_limit, limit * len(parts) * 2
    )
    for spec in parts:
        module = getattr(model, spec.name)
        eager = module.forward  # the class's forward, bound to this module
        compiled = torch.compile(
            eager,
            mode=mode if backend == "inductor" else None,  # modes are inductor settings
            dynamic=spec.dynamic,
            fullgraph=spec.fullgraph,
            backend=backend,
        )
        forward = _GuardedForward(spec.name, eager, compiled, on_failure == "raise")
        module.forward = forward  # instance attribute: shadows the class method, hooks still run
        handle._forwards[spec.name] = forward
        logger.info(
            "compiling %s: mode=%s dynamic=%s fullgraph=%s (%s)",
            spec.name,
            mode,
            spec.dynamic,
            spec.fullgraph,
            spec.reason,
        )
    _HANDLES[model] = handle
    return handle
