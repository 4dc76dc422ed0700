"""The serving and latency sections of bench/gpu_acceptance.py: aggregate frames/s through the
scheduler (bench_serving.aggregate), eager or compiled, and frame-in to masklet-out latency
through a real `sam2-stream serve` subprocess (standard library HTTP: no test extra needed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from common import REPO

from sam2_video.build import build_sam2

CLIP = REPO / "tests" / "data" / "bedroom.mp4"


def serving(args, device, compiled: bool = False) -> list[dict]:
    """Aggregate serving rows at the device's default precision (bf16 + TF32 on CUDA);
    `compiled`: the vos_optimized service (compiled and warmed up for these batches)."""
    import bench_serving

    from streamer.sessions.devices import DeviceSpec

    model = build_sam2(args.config, device=str(device))
    ns = argparse.Namespace(
        sessions=args.streams,
        max_batch=max(args.streams),
        objects=2,
        warmup=args.serve_warmup,
        seconds=args.serve_seconds,
        vos_optimized=compiled,
    )
    if compiled:
        from sam2_video.compile import compile_model
        from sam2_video.tracking.tracker import StaticShapes
        from sam2_video.warmup import warm_up

        rows = ns.objects * ns.max_batch
        compile_model(model, backend=args.backend, buckets=StaticShapes().buckets_up_to(rows))
        warm_up(model, max_objects=ns.objects, max_batch=ns.max_batch, time_budget=600)
    hw = (240, 320) if args.quick else (540, 960)
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        bench_serving.write_clip(clip, 3000 if not args.quick else 300, *hw, 2)
        label = f"{device.type}:{device.index or 0}"
        return bench_serving.aggregate({DeviceSpec(label, str(device)): model}, clip, ns, hw)


def _http(method: str, url: str, body: dict | None = None, timeout: float = 30) -> tuple:
    """(status, JSON body) with the standard library (the script needs no test extra)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, None


def latency(args, device, tmp: Path) -> dict:
    from websockets.asyncio.client import connect

    model = build_sam2(args.config, device=str(device))
    checkpoint = tmp / "weights.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    port = 18765
    env = {**os.environ, "SAM2_STREAM_MAX_SESSIONS": "4"}
    cmd = [
        sys.executable,
        "-m",
        "streamer.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--model",
        args.config,
        "--checkpoint",
        str(checkpoint),
        "--device",
        str(device),
    ]
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _http("GET", f"{base}/readyz", timeout=2)[0] == 200:
                    break
            except OSError:  # not listening yet
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(
                    f"server did not start: {(tmp / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        _, session = _http(
            "POST",
            f"{base}/sessions",
            {"source": str(CLIP), "paced": True, "max_frames": args.latency_frames},
        )

        async def follow() -> list[float]:
            latencies = []
            async with connect(f"ws://127.0.0.1:{port}/sessions/{session['id']}/ws") as ws:
                while True:
                    message = json.loads(await asyncio.wait_for(ws.recv(), 60))
                    if message["type"] == "frame":
                        latencies.append(time.time() - message["capture_time"])
                    elif message["type"] == "end":
                        return latencies

        values = np.array(asyncio.run(follow())) * 1000
    finally:
        server.terminate()
        server.wait(30)
        log.close()
    return {
        "frames": int(len(values)),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
    }
