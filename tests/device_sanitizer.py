"""A device sanitizer: CUDA's device rules, checked on a CPU-only machine.

On a CPU-only machine every tensor is on the CPU, so code that forgets a `.to(device)` runs
fine here and fails on the first GPU with "Expected all tensors to be on the same device".
`DeviceSanitizer` is a `TorchFunctionMode` that tags every tensor as *device* or *host* and
applies the rules a GPU would:

- *Device* tensors: the parameters and buffers of the adopted model, tensors created with or
  moved to the model's device, and the results of ops with a device input. While the mode is
  active a device tensor reports `.device == cuda:0` (a fake device: the data stays on the CPU),
  so the code under test takes its CUDA branches, and `torch.zeros(..., device=x.device)` or
  `.to(model.device)` create device tensors.
- *Host* tensors: everything else (made without a device, from numpy, `.cpu()`).
- An op that mixes a device tensor with a host tensor of one or more dimensions is a
  violation (0-dim host tensors pass, as CUDA accepts CPU scalars in element-wise ops; not in
  `cat` / `stack`). Host index tensors in
  `t[idx]` / `t[idx] = v` are allowed, as CUDA allows them.
- `.numpy()` / `np.asarray()` of a device tensor is a violation (CUDA refuses it).
- Host reads of device tensors are counted by kind: `.item()`, `bool()`, `float()`, `int()`,
  `.tolist()`, `.cpu()` / `.to("cpu")`, and ops that must read a device value to size their
  output (`nonzero`, boolean-mask indexing, ...). On a GPU each one waits for the device.

Violations raise `DeviceMixError` at the op (with the op and the operands' tags) and are also
kept in `violations`, so a violation swallowed by a `try` in the code under test still fails the
test (`check()`).

    with DeviceSanitizer() as san:
        san.adopt(model)
        session.add_points(...)
    san.check()
"""

from __future__ import annotations

import collections
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

# The device that device tensors pretend to be on.
FAKE_DEVICE = torch.device("cuda", 0)
_TAG = "_device_sanitizer_on_device"

# Host reads: functions that copy one device value (or all of a tensor) to the host.
_SCALAR_READS = {
    Tensor.item: "item",
    Tensor.__bool__: "bool",
    Tensor.__float__: "float",
    Tensor.__int__: "int",
    Tensor.__index__: "index",
    Tensor.tolist: "tolist",
    Tensor.__format__: "format",
    Tensor.__repr__: "repr",
}
# Ops whose output size depends on device values: a GPU syncs to size the result.
_DATA_DEPENDENT = {
    torch.nonzero: "nonzero",
    Tensor.nonzero: "nonzero",
    torch.masked_select: "masked_select",
    Tensor.masked_select: "masked_select",
    torch.unique: "unique",
    Tensor.unique: "unique",
    torch.argwhere: "nonzero",
    Tensor.argwhere: "nonzero",
}
_NUMPY = {Tensor.numpy, Tensor.__array__}
# Functions that take a `device` argument and create a tensor there.
_FACTORIES = {
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.tensor,
    torch.as_tensor,
    torch.arange,
    torch.linspace,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.eye,
    torch.zeros_like,
    torch.ones_like,
    torch.empty_like,
    torch.full_like,
    torch.rand_like,
    torch.randn_like,
    torch.empty_strided,
    Tensor.new_zeros,
    Tensor.new_ones,
    Tensor.new_empty,
    Tensor.new_full,
    Tensor.new_tensor,
}
_INDEXING = {Tensor.__getitem__, Tensor.__setitem__}
# Ops that take no CPU scalar beside device tensors (only element-wise ops do).
_NO_SCALAR_EXEMPTION = {torch.cat, torch.concat, torch.stack, torch.hstack, torch.vstack}


class DeviceMixError(RuntimeError):
    """An op that would fail on a GPU: host and device tensors mixed, or a device tensor
    converted to numpy."""


@dataclass(frozen=True)
class Violation:
    """One op that breaks CUDA's device rules: the op's name, why, and where it was called."""

    op: str
    reason: str
    where: str


def _is_device(t: Tensor) -> bool:
    return bool(t.__dict__.get(_TAG, False)) if hasattr(t, "__dict__") else False


def _tag(t: Tensor, on_device: bool) -> None:
    try:
        setattr(t, _TAG, on_device)
    except (AttributeError, RuntimeError):  # some tensor subclasses refuse attributes
        pass


def _is_fake(device: Any) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, torch.device) and device.type == "cuda"


def _real(value: Any) -> Any:
    """The argument with the fake device replaced by the CPU (where the data really is)."""
    return torch.device("cpu") if _is_fake(value) else value


def _op_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    if name == "__get__" and hasattr(func, "__self__"):
        name = f"Tensor.{func.__self__.__name__}"
    return name


def _caller() -> str:
    """The innermost stack frame outside torch and this file."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        if "/torch/" not in frame.filename and not frame.filename.endswith(__file__):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "?"


class DeviceSanitizer(TorchFunctionMode):
    """Tags tensors device/host, fails ops that mix them, counts host reads (module docstring).

    raise_on_violation: raise `DeviceMixError` at the offending op (default); False only
        records it in `violations` (to list every defect of a path in one run).
    """

    def __init__(self, *, raise_on_violation: bool = True) -> None:
        super().__init__()
        self.raise_on_violation = raise_on_violation
        self.violations: list[Violation] = []
        self.host_reads: collections.Counter[str] = collections.Counter()
        self.read_sites: collections.Counter[str] = collections.Counter()

    # ------------------------------------------------------------------ set-up and results
    def adopt(self, *objects: nn.Module | Tensor | Iterable[Tensor]) -> None:
        """Mark the parameters and buffers of modules (or the given tensors) as device tensors."""
        for obj in objects:
            if isinstance(obj, nn.Module):
                for t in [*obj.parameters(), *obj.buffers()]:
                    _tag(t, True)
            elif isinstance(obj, Tensor):
                _tag(obj, True)
            else:
                for t in obj:
                    _tag(t, True)

    @staticmethod
    def on_device(t: Tensor) -> bool:
        """Whether the sanitizer counts `t` as a device tensor."""
        return _is_device(t)

    @property
    def total_host_reads(self) -> int:
        return sum(self.host_reads.values())

    def reset_counts(self) -> None:
        self.host_reads.clear()
        self.read_sites.clear()

    def check(self) -> None:
        """Raise `DeviceMixError` listing every violation recorded so far."""
        if self.violations:
            counts = collections.Counter(self.violations)
            lines = [f"{n} x {v.op}: {v.reason} at {v.where}" for v, n in counts.items()]
            raise DeviceMixError(
                f"{len(self.violations)} device violation(s):\n" + "\n".join(lines)
            )

    # ------------------------------------------------------------------ the mode
    def _violate(self, func: Any, reason: str) -> None:
        violation = Violation(_op_name(func), reason, _caller())
        self.violations.append(violation)
        if self.raise_on_violation:
            raise DeviceMixError(f"{violation.op}: {reason} at {violation.where}")

    def _read(self, kind: str) -> None:
        self.host_reads[kind] += 1
        self.read_sites[f"{kind} at {_caller()}"] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: C901 - one dispatch
        kwargs = kwargs or {}
        if func is torch.device:  # `torch.device(x.device)` keeps the fake device
            return func(*args, **kwargs)
        # Property getters: a device tensor reports the fake device.
        if getattr(func, "__name__", "") == "__get__" and args and isinstance(args[0], Tensor):
            attr = getattr(func, "__self__", None)
            if attr is Tensor.device and _is_device(args[0]):
                return FAKE_DEVICE
            if attr is Tensor.is_cuda and _is_device(args[0]):
                return True
            if attr is Tensor.is_cpu and _is_device(args[0]):
                return False
        flat, _ = tree_flatten((args, kwargs))
        tensors = [x for x in flat if isinstance(x, Tensor)]
        device_in = any(_is_device(t) for t in tensors)

        if func in _SCALAR_READS and device_in:
            self._read(_SCALAR_READS[func])
        elif func in _DATA_DEPENDENT and device_in:
            self._read(_DATA_DEPENDENT[func])
        elif func in _NUMPY and device_in:
            self._violate(func, "a device tensor converted to numpy (call .cpu() first)")
        elif func is Tensor.pin_memory:
            return args[0]  # no CUDA here to pin with; the tensor stays on the host
        elif func is Tensor.record_stream:
            return None

        target = self._target_device(func, args, kwargs)
        if func in (Tensor.copy_, Tensor.__setitem__) and not _is_device(args[0]):
            # A copy into a host tensor (`host.copy_(dev)`, `host[i] = dev`) is a download.
            if any(_is_device(t) for t in tensors[1:]):
                self._read("copy_to_host")
            if func is Tensor.__setitem__:
                self._check_mixing(func, args, kwargs, tensors)
        elif func is Tensor.copy_:
            pass  # an upload (host to device copy) is what a copy is for
        elif target is None:  # an ordinary op: no mixing, result on the inputs' side
            self._check_mixing(func, args, kwargs, tensors)
        elif target is False and device_in:
            self._read("cpu")
        if func is Tensor.__getitem__ and device_in and _bool_mask_index(args[1]):
            self._read("bool_mask_index")

        out = func(*tree_map(_real, args), **tree_map(_real, kwargs))

        if func in (Tensor.copy_, Tensor.__setitem__):
            return out  # in place: the destination keeps its tag
        on_device = device_in if target is None else bool(target)
        if target is not None and out is args[0] and _is_device(out) != on_device:
            out = out.clone()  # a real move copies; on the CPU `.to`/`.cpu` return `self`
        if func is Tensor.__getitem__:
            on_device = _is_device(args[0])
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                _tag(t, on_device)
        return out

    def _target_device(self, func: Any, args: tuple, kwargs: dict) -> bool | None:
        """For ops that place their result: True (device), False (host); None otherwise."""
        if func is Tensor.cpu:
            return False
        if func is Tensor.cuda:
            return True
        if func in (Tensor.to, Tensor.type_as):
            for a in [*args[1:], kwargs.get("device"), kwargs.get("other")]:
                if isinstance(a, Tensor):
                    return _is_device(a)
                if isinstance(a, (str, torch.device)) and not isinstance(a, torch.dtype):
                    if isinstance(a, str) and not (a.startswith("cuda") or a.startswith("cpu")):
                        continue  # a dtype string (type_as) or another device
                    return _is_fake(a)
            return None  # a dtype-only conversion keeps the input's side
        if func in _FACTORIES:
            device = kwargs.get("device")
            if device is not None:
                return _is_fake(device)
            if func.__name__.startswith("new_") or func.__name__.endswith("_like"):
                return None  # follows the input tensor
            return False
        if func in (torch.from_numpy, torch.frombuffer):
            return False
        return None

    def _check_mixing(self, func: Any, args: tuple, kwargs: dict, tensors: list[Tensor]) -> None:
        if func in _INDEXING:
            # CUDA accepts host index tensors; a host value needs a copy (basic index) or is
            # refused (advanced index, index_put_).
            target, index = args[0], args[1]
            index_tensors = [x for x in tree_flatten(index)[0] if isinstance(x, Tensor)]
            if not _is_device(target):
                if any(_is_device(t) and t.dim() > 0 for t in index_tensors):
                    self._violate(func, "a host tensor indexed with a device index tensor")
                return
            if func is Tensor.__setitem__:
                value = args[2]
                if (
                    isinstance(value, Tensor)
                    and not _is_device(value)
                    and value.dim() > 0
                    and index_tensors
                ):
                    self._violate(func, "a host value put into a device tensor at tensor indices")
            return
        device = [t for t in tensors if _is_device(t)]
        strict = func in _NO_SCALAR_EXEMPTION
        host = [t for t in tensors if not _is_device(t) and (strict or t.dim() > 0)]
        if device and host:
            shapes = ", ".join(str(tuple(t.shape)) for t in host)
            self._violate(func, f"device tensor(s) mixed with host tensor(s) of shape {shapes}")


def _bool_mask_index(index: Any) -> bool:
    return any(
        isinstance(x, Tensor) and x.dtype == torch.bool and x.dim() > 0 and _is_device(x)
        for x in tree_flatten(index)[0]
    )
