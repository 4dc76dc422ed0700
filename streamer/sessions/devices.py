"""Which devices the service runs on, and where a new session goes.

One scheduler and one model replica per device (`DeviceSpec`). Devices are named by their
torch device and an index, so that two replicas on one kind of device are told apart: `cuda:0`,
`cuda:1`, and `cpu:0`, `cpu:1` for two CPU replicas (`--devices cpu,cpu`).

Placement policy (`least_loaded`): a new session goes to the live device with the least
*measured* load, the device seconds per second its sessions were charged over the last few
seconds (see `FairShare`); a session too new to have been measured counts as the device's
mean per-session load (or one frame's cost when nothing is measured yet), so sessions created
back to back spread out before any of them ran. Ties go to the device with fewer sessions, then
to the first listed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DeviceSpec:
    """label: the name in the API and metrics (`cuda:1`, `cpu:0`); torch_device: where the
    model replica lives (`cuda:1`, `cpu`)."""

    label: str
    torch_device: str

    @property
    def kind(self) -> str:
        """The torch device type: "cuda" or "cpu"."""
        return self.torch_device.split(":")[0]


def parse_devices(names: Sequence[str] | None, default: str | None = None) -> list[DeviceSpec]:
    """Device specs from names like ["cuda:0", "cuda:1"] or ["cpu", "cpu"].

    None or empty: `default` if given ("cpu", "cuda", "cuda:1"), else every visible GPU, else the
    CPU. "cuda" alone means every visible GPU. Raises ValueError for an unknown or unavailable
    device.
    """
    if not names:
        names = [default] if default else (["cuda"] if torch.cuda.is_available() else ["cpu"])
    specs: list[DeviceSpec] = []
    cpu_count = 0
    for raw in names:
        name = raw.strip().lower()
        if name in ("cuda", "gpu"):
            if not torch.cuda.is_available():
                raise ValueError("device 'cuda' asked for, but no GPU is visible")
            specs += [
                DeviceSpec(f"cuda:{i}", f"cuda:{i}") for i in range(torch.cuda.device_count())
            ]
        elif name.startswith("cuda:"):
            index = _index(name)
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise ValueError(f"device {raw!r} is not visible")
            specs.append(DeviceSpec(name, name))
        elif name == "cpu" or name.startswith("cpu:"):
            specs.append(DeviceSpec(f"cpu:{cpu_count}", "cpu"))
            cpu_count += 1
        else:
            raise ValueError(f"unknown device {raw!r} (use cpu, cuda or cuda:N)")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"a device is listed twice: {names}")
    return specs


def _index(name: str) -> int:
    try:
        index = int(name.split(":", 1)[1])
    except ValueError:
        raise ValueError(f"bad device index in {name!r}") from None
    if index < 0:
        raise ValueError(f"bad device index in {name!r}")
    return index


@dataclass(frozen=True)
class DeviceLoad:
    """What placement knows of one device: measured load (device seconds per second charged
    to its sessions), how many of its sessions are measured, and how many it has."""

    label: str
    alive: bool
    measured_load: float
    measured_sessions: int
    sessions: int


def least_loaded(devices: Sequence[DeviceLoad], *, unmeasured_cost: float) -> str | None:
    """Label of the device a new session goes to (see the module docstring); None if no
    device is alive. unmeasured_cost: the load of a session with no measurement anywhere."""
    live = [d for d in devices if d.alive]
    if not live:
        return None
    measured = [d.measured_load / d.measured_sessions for d in live if d.measured_sessions]
    mean = sum(measured) / len(measured) if measured else unmeasured_cost

    def expected(device: DeviceLoad) -> float:
        per_session = (
            device.measured_load / device.measured_sessions if device.measured_sessions else mean
        )
        return device.measured_load + (device.sessions - device.measured_sessions) * per_session

    best = min(range(len(live)), key=lambda i: (expected(live[i]), live[i].sessions, i))
    return live[best].label
