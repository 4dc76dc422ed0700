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
(1, 2, 4, ... objects). If compiling a part fails (no C compiler, an unsupported op, ...), that
part logs a warning and runs eagerly from then on: a slower model, never a broken one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sam2_video.modeling.sam2 import SAM2Model

logger = logging.getLogger(__name__)

# Graphs one compiled part may keep: 7 batch buckets, plus variants (e.g. a prompt's point
# count) - above torch's default of 8, after which dynamo silently runs the part eagerly.
RECOMPILE_LIMIT = 16


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
        dynamic=None,
        reason="token count follows the prompt's P: symbolic once it varies, tracking stays static",
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
    """A compiled forward that falls back, for good, to the eager one if compiling fails.

    Errors raised by the eager forward too (bad inputs) are re-raised and keep the compiled path.
    """

    def __init__(self, name: str, eager: Callable[..., Any], compiled: Callable[..., Any]) -> None:
        self.name = name
        self.eager = eager
        self.compiled = compiled
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
        self.error = f"{type(compile_error).__name__}: {compile_error}"
        logger.warning(
            "torch.compile of %s failed; running it eagerly from now on (%s)",
            self.name,
            self.error.splitlines()[0],
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

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def fallbacks(self) -> dict[str, str]:
        """Parts that failed to compile and run eagerly -> the error."""
        return {name: fwd.error for name, fwd in self._forwards.items() if fwd.error is not None}

    def restore(self) -> None:
        """Put the eager forwards back (compiled graphs are dropped with the wrappers)."""
        for name, forward in self._forwards.items():
            module = getattr(self.model, name)
            if _guarded_forward(module) is forward:
                del module.forward
        self._forwards.clear()


def compile_model(
    model: SAM2Model,
    *,
    mode: str | None = None,
    parts: Sequence[CompileSpec] = VOS_OPTIMIZED,
    backend: str | Callable[..., Any] = "inductor",
) -> CompiledParts:
    """Compile the `forward` of each part of `model` in place (`vos_optimized` by default).

    mode: `torch.compile` mode; None picks `default_mode(model.device)`.
    parts: which components and how (see `VOS_OPTIMIZED`); pass a subset or
        `dataclasses.replace`d specs to experiment. Parts whose `eager_on` lists the model's
        device type stay eager (`handle.names` lists the compiled ones).
    backend: `torch.compile` backend: "inductor", or e.g. "eager" to check graphs and guards
        without code generation.
    Nothing is compiled until the first call. Compiling an already compiled part raises
    ValueError. Raises torch's limit of graphs per function to `RECOMPILE_LIMIT` (global).
    """
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
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
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
        forward = _GuardedForward(spec.name, eager, compiled)
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
    return handle
