"""Test helper: run `sam2-stream serve` with the micro model in a subprocess on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import MICRO_CHECKPOINT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(
    log_path: Path,
    token: str,
    env: dict[str, str],
    ready_timeout: float = 120.0,
    processes: list[subprocess.Popen] | None = None,
) -> Iterator[str]:
    """Start the server, wait (bounded) until /readyz answers, yield its base URL, stop it.
    processes: if given, the server's Popen is appended (to read its /proc entry)."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamer.cli", "-v", "serve", "--host", "127.0.0.1",
        "--port", str(port), "--model", "sam2.1_micro", "--checkpoint", str(MICRO_CHECKPOINT),
        "--device", "cpu",
    ]  # fmt: skip
    # The token is the admin's too (the single-token model) unless `env` says otherwise.
    full_env = {
        **os.environ,
        "SAM2_STREAM_AUTH_TOKEN": token,
        "SAM2_STREAM_ADMIN_TOKEN": token,
        **env,
    }
    root = Path(__file__).resolve().parents[1]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command, cwd=root, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    if processes is not None:
        processes.append(process)
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", headers=auth, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready in {ready_timeout} s:\n{log_path.read_text()}")
            try:
                process.wait(timeout=0.2)  # the poll step; also notices an early exit
            except subprocess.TimeoutExpired:
                pass
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def holds_udp_port(pid: int, port: int) -> bool:
    """True when process `pid` has a UDP socket bound to local `port` (IPv4 or IPv6)."""
    inodes = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes), threads and open fds (sockets too) of a live process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
        elif name == "Threads":
            fields["threads"] = int(value)
    fds = list(Path(f"/proc/{pid}/fd").iterdir())
    fields["fds"] = len(fds)
    sockets = 0
    for fd in fds:
        try:
            sockets += os.readlink(fd).startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    fields["sockets"] = sockets
    return fields


def reset_peak_rss(pid: int) -> None:
    """Reset the process's VmHWM to its current RSS (Linux >= 4.0, same user)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
