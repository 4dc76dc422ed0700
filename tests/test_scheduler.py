"""The serving core: scheduling policies alone, then device schedulers with the micro model on CPU
(cross-stream batching equal to solo, fairness under an abusive client, two devices).

Every wait is bounded; sessions read a real clip through real file sources.
"""

from __future__ import annotations

import copy
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families
from waiting import poll

from sam2_video import SessionOptions, StreamingSession
from sam2_video.predictors.auto_seed import AutoSeedOptions
from streamer.protocol import Ack, AutoSeed, Error, ErrorCode, Reset
from streamer.service.metrics import render_service_metrics
from streamer.sessions import SessionCreate, SessionManager, SessionState
from streamer.sessions.devices import DeviceLoad, DeviceSpec, least_loaded, parse_devices
from streamer.sessions.fairness import FairShare, TokenBucket
from streamer.settings import Settings

CLIP = Path(__file__).parent / "data" / "bedroom.mp4"
TIMEOUT = 60.0


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # a CPU scheduler sets 1 thread, process-wide
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """A 160x120 clip of 3,000 frames (100 s at 30 fps) with moving shapes: sources that do
    not run out during a test."""
    import av

    path = tmp_path_factory.mktemp("scheduler") / "long.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(3000):
            image = np.full((120, 160, 3), 30, np.uint8)
            x = 10 + i % 100
            image[30:70, x : x + 40] = (220, 80, 60)
            image[60:110, 100 - i % 80 : 140 - i % 80] = (60, 200, 120)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


# --- policies alone ---------------------------------------------------------------------------


def test_fair_share_serves_the_most_owed_and_converges_to_equal_time():
    fair = FairShare(rejoin_credit=0.0)
    cost = {"heavy": 0.5, "light": 0.05}  # seconds per unit of work
    served = {"heavy": 0.0, "light": 0.0}
    for _ in range(400):
        key = fair.order(["heavy", "light"])[0]
        fair.charge(key, cost[key])
        served[key] += cost[key]
    assert served["heavy"] == pytest.approx(served["light"], rel=0.05)
    # A key that was idle rejoins at the clock (the start of the last served unit): it is not
    # owed the whole past, at most one unit of work.
    fair.order(["newcomer"])
    behind = min(fair.virtual_time(k) for k in served) - fair.virtual_time("newcomer")
    assert behind <= max(cost.values())
    fair.forget("newcomer")
    assert "newcomer" not in fair.keys()


def test_token_bucket_allows_a_burst_then_says_when():
    now = [0.0]
    bucket = TokenBucket(per_minute=6, burst=2, clock=lambda: now[0])
    assert bucket.take() == 0.0 and bucket.take() == 0.0
    retry = bucket.take()
    assert retry == pytest.approx(10.0)
    now[0] += 10.0
    assert bucket.take() == 0.0
    with pytest.raises(ValueError):
        TokenBucket(per_minute=0, burst=1)


def test_least_loaded_placement():
    def load(label, measured, measured_n, n, alive=True):
        return DeviceLoad(label, alive, measured, measured_n, n)

    # Nothing measured yet: fewest sessions first, then the first listed.
    assert least_loaded([load("a", 0, 0, 1), load("b", 0, 0, 0)], unmeasured_cost=1) == "b"
    assert least_loaded([load("a", 0, 0, 0), load("b", 0, 0, 0)], unmeasured_cost=1) == "a"
    # Measured: a device with one heavy session is busier than one with two light ones.
    devices = [load("a", 0.9, 1, 1), load("b", 0.2, 2, 2)]
    assert least_loaded(devices, unmeasured_cost=1) == "b"
    # Unmeasured sessions count as the device's mean; dead devices are skipped.
    devices = [load("a", 0.2, 1, 4), load("b", 0.5, 1, 1), load("c", 0, 0, 0, alive=False)]
    assert least_loaded(devices, unmeasured_cost=1) == "b"
    assert least_loaded([load("c", 0, 0, 0, alive=False)], unmeasured_cost=1) is None


def test_device_names():
    specs = parse_devices(["cpu", "cpu"])
    assert [s.label for s in specs] == ["cpu:0", "cpu:1"]
    assert {s.torch_device for s in specs} == {"cpu"}
    assert [s.label for s in parse_devices(None, default="cpu")] == ["cpu:0"]
    for bad in (["tpu"], ["cuda:x"], ["cuda:-1"]):
        with pytest.raises(ValueError):
            parse_devices(bad)


# --- schedulers -------------------------------------------------------------------------------


def _manager(models, **settings) -> SessionManager:
    manager = SessionManager(models=models, settings=Settings(**settings))
    manager.start()
    return manager


def test_batched_sessions_equal_solo_runs(micro_model):
    """Three file sessions of different lengths, auto-seeded, batched on one device: every
    frame's masks equal those of the same frames tracked alone."""
    manager = _manager(
        {DeviceSpec("cpu:0", "cpu"): micro_model},
        max_batch=3,
        auto_seed_points_per_side=4,
        max_objects_per_session=4,
    )
    recorded: dict[str, list] = {}
    try:
        sessions = []
        for frames in (5, 7, 9):
            session = manager.create(
                SessionCreate(source=str(CLIP), start="now", auto_seed=True, max_frames=frames)
            )
            recorded[session.id] = []
            session.add_result_listener(
                lambda frame, result, key=session.id: recorded[key].append(
                    (frame.image.copy(), result)
                )
            )
            sessions.append(session)
        poll(
            lambda: all(s.state is SessionState.FINISHED for s in sessions),
            TIMEOUT,
            what="the ends",
        )
        scheduler = manager.schedulers["cpu:0"]
        assert max(scheduler.batch_sizes) >= 2  # frames of several sessions shared steps
    finally:
        manager.shutdown(timeout=TIMEOUT)
    torch.set_num_threads(1)  # as the scheduler ran
    seed = AutoSeedOptions(points_per_side=4, max_objects=8)
    for session in sessions:
        solo = StreamingSession(micro_model, SessionOptions(max_objects=4, auto_seed=seed))
        assert len(recorded[session.id]) == session.request.max_frames
        for image, result in recorded[session.id]:
            want = solo.add_frame(image)
            assert result.obj_ids == want.obj_ids
            assert result.frame_idx == want.frame_idx
            differ = (result.masks != want.masks).mean() if want.obj_ids else 0.0
            assert differ < 1e-3  # rounding noise flips at most a few edge pixels


def test_an_auto_seed_loop_does_not_starve_another_session(micro_model, long_clip):
    """One client loops reset + auto_seed; a busy batch session keeps its fair share of the
    device meanwhile. Shares are of the device time the scheduler measured and charged to each
    session over a window of three completed auto_seeds (counted, not timed), so a slow or
    busy machine changes how long the window lasts, not the shares."""
    manager = _manager(
        {DeviceSpec("cpu:0", "cpu"): micro_model},
        auto_seed_points_per_side=8,
        expensive_commands_per_minute=100_000,
        expensive_commands_burst=1000,
    )
    stop = threading.Event()
    seeded = threading.Condition()
    replies: list = []

    def seeds() -> int:
        return sum(1 for r in replies if isinstance(r, Ack) and r.request == "auto_seed")

    try:
        busy = manager.create(SessionCreate(source=str(long_clip), start="now"))
        poll(lambda: busy.processed >= 5, TIMEOUT, what="the busy session to run")
        abuser = manager.create(SessionCreate(source=str(long_clip), paced=True, start="now"))
        poll(lambda: abuser.view.frame_idx >= 0, TIMEOUT, what="the abuser's first frame")

        def abuse() -> None:
            for _ in range(200):  # bounded
                if stop.is_set():
                    return
                replies.append(abuser.submit(Reset(type="reset")).result(TIMEOUT))
                seen = abuser.view.frame_idx
                # A frame after the reset, so auto_seed has one (paced: ~30 ms away).
                poll(lambda s=seen: abuser.view.frame_idx != s, TIMEOUT, "a frame", step=0.005)
                reply = abuser.submit(AutoSeed(type="auto_seed", id=1)).result(TIMEOUT)
                with seeded:
                    replies.append(reply)
                    seeded.notify_all()

        thread = threading.Thread(target=abuse, daemon=True)
        thread.start()
        with seeded:
            assert seeded.wait_for(lambda: seeds() >= 1, TIMEOUT), "no auto_seed was answered"
            first = seeds()
            start = (busy.device_seconds, abuser.device_seconds, busy.processed)
            assert seeded.wait_for(lambda: seeds() >= first + 3, TIMEOUT), "auto_seed stalled"
            end = (busy.device_seconds, abuser.device_seconds, busy.processed)
    finally:
        stop.set()
        thread.join(TIMEOUT)
        manager.shutdown(timeout=TIMEOUT)
    busy_time, abuser_time = end[0] - start[0], end[1] - start[1]
    assert abuser_time > 0, "the abuser's auto_seeds were not charged to it"
    assert end[2] > start[2], "the busy session processed no frame during three auto_seeds"
    share = busy_time / (busy_time + abuser_time)
    # Fair share is 1/2 (more while the abuser waits for frames); a long command runs in
    # slices, so the busy session waits at most one slice at a time. Starvation would be ~0.
    assert share >= 0.35, (
        f"busy session's device share {share:.2f} ({busy_time:.2f} s of "
        f"{busy_time + abuser_time:.2f} s)"
    )


def test_expensive_commands_are_rate_limited(micro_model, long_clip):
    manager = _manager(
        {DeviceSpec("cpu:0", "cpu"): micro_model},
        auto_seed_points_per_side=4,
        expensive_commands_per_minute=1,
        expensive_commands_burst=1,
    )
    try:
        session = manager.create(SessionCreate(source=str(long_clip), paced=True, start="now"))
        poll(lambda: session.view.frame_idx >= 0, TIMEOUT, what="a first frame")
        first = session.submit(AutoSeed(type="auto_seed", id="a")).result(TIMEOUT)
        second = session.submit(AutoSeed(type="auto_seed", id="b")).result(TIMEOUT)
    finally:
        manager.shutdown(timeout=TIMEOUT)
    assert isinstance(first, Ack)
    assert isinstance(second, Error) and second.code is ErrorCode.RATE_LIMITED
    assert second.id == "b" and 0 < second.retry_after <= 60


def test_two_cpu_devices_place_serve_and_survive_one_failing(micro_model, long_clip):
    models = {
        DeviceSpec("cpu:0", "cpu"): micro_model,
        DeviceSpec("cpu:1", "cpu"): copy.deepcopy(micro_model),
    }
    manager = _manager(models, max_sessions=8)
    try:
        sessions = [
            manager.create(SessionCreate(source=str(long_clip), paced=True, start="now"))
            for _ in range(4)
        ]
        devices = [s.info().device for s in sessions]
        assert sorted(devices) == ["cpu:0", "cpu:0", "cpu:1", "cpu:1"]  # spread before any ran
        poll(
            lambda: all(s.processed >= 3 for s in sessions), TIMEOUT, what="frames on both devices"
        )
        families = {
            f.name: f for f in text_string_to_metric_families(render_service_metrics(manager))
        }
        busy = {
            s.labels["device"]: s.value
            for s in families["sam2_stream_device_busy_fraction"].samples
        }
        assert set(busy) == {"cpu:0", "cpu:1"} and all(v > 0 for v in busy.values())
        batch_counts = [
            s for s in families["sam2_stream_batch_size"].samples if s.name.endswith("_count")
        ]
        assert {s.labels["device"] for s in batch_counts} == {"cpu:0", "cpu:1"}

        # Device cpu:1's scheduler crashes: its sessions fail with a clear error, cpu:0 goes on.
        broken = manager.schedulers["cpu:1"]

        def crash() -> bool:
            raise RuntimeError("simulated device fault")

        broken.step = crash
        broken.wake()
        assert broken.ended.wait(TIMEOUT)
        on_broken = [s for s in sessions if s.device == "cpu:1"]
        on_healthy = [s for s in sessions if s.device == "cpu:0"]
        poll(
            lambda: all(s.state is SessionState.FAILED for s in on_broken), TIMEOUT, what="failures"
        )
        assert all("device cpu:1 stopped working" in s.error for s in on_broken)
        before = [s.processed for s in on_healthy]
        poll(
            lambda: all(s.processed > b for s, b in zip(on_healthy, before)), TIMEOUT, what="cpu:0"
        )
        assert all(s.state is SessionState.RUNNING for s in on_healthy)
        assert manager.ready and manager.errors == {"cpu:1": "RuntimeError: simulated device fault"}
        late = manager.create(SessionCreate(source=str(long_clip), paced=True, start="now"))
        assert late.device == "cpu:0"
    finally:
        manager.shutdown(timeout=TIMEOUT)
