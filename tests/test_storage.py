"""The motion history after power cuts, on a full card, and across clock steps."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.history import events as events_module
from appliance.history.events import EventRecorder, EventStore, UnknownEvent
from appliance.motion.events import MotionEventTracker, MotionResult, new_event_id
from tests import helpers

JAN_2030 = 1_893_456_000.0
NOV_2026 = 1_795_000_000.0


def record(started_at: float, **extra: Any) -> dict[str, Any]:
    return {"id": new_event_id(started_at), "kind": "motion", "started_at": started_at, "ended_at": started_at + 5,
            "box": None, "peak_score": 0.5, "peak_area": 0.1, "frames": 9, **extra}


def files(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def test_start_up_removes_what_a_power_cut_left_and_counts_every_byte(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    store = EventStore(folder, max_count=100, max_bytes=10**9)
    good = record(NOV_2026)
    store.save(good, b"\xff\xd8good")
    assert store.get(good["id"])["has_snapshot"]
    bad = [new_event_id(NOV_2026 + i) for i in range(6)]
    (folder / f"{bad[0]}.json").write_bytes(b"")  # zero length: the rename reached the card, the data not
    (folder / f"{bad[1]}.json").write_text('{"id": "' + bad[1] + '", "started')  # truncated
    (folder / f"{bad[2]}.json").write_text("[1, 2, 3]")  # valid JSON, not an object
    (folder / f"{bad[3]}.json").write_text(json.dumps({"id": bad[0]}))  # someone else's record
    (folder / f"{bad[4]}.jpg").write_bytes(b"\xff\xd8orphan")  # a JPEG whose record was lost
    (folder / f"{bad[5]}.json").write_text(json.dumps(record(NOV_2026, id=bad[5], has_snapshot=True)))  # no JPEG
    (folder / ".tmp-abc123").write_bytes(b"half a write")
    again = EventStore(folder, max_count=100, max_bytes=10**9)
    assert files(folder) == {f"{good['id']}.json", f"{good['id']}.jpg"}
    listed, total = again.list()
    assert total == 1 and listed[0]["id"] == good["id"]
    assert again.total_bytes() == sum(path.stat().st_size for path in folder.iterdir())


def test_the_history_page_survives_a_damaged_folder(start_appliance: Any, tmp_path: Path) -> None:
    folder = tmp_path / "state" / "events"
    folder.mkdir(parents=True)
    (folder / f"{new_event_id(NOV_2026)}.json").write_text('"just a string"')
    (folder / f"{new_event_id(NOV_2026 + 1)}.json").write_bytes(b"")
    good = record(NOV_2026 + 2)
    (folder / f"{good['id']}.json").write_text(json.dumps(good))
    app = start_appliance()
    listing = requests.get(app.url + "/api/events", timeout=5).json()
    assert [event["id"] for event in listing["events"]] == [good["id"]]
    assert requests.get(app.url + "/", timeout=5).status_code == 200


def test_a_deleted_event_stays_deleted_when_its_end_arrives(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    running = record(NOV_2026, ended_at=None)
    store.save(running, b"\xff\xd8start")
    store.delete(running["id"])
    assert store.save({**running, "ended_at": NOV_2026 + 9}) is False  # the end of the deleted event
    with pytest.raises(UnknownEvent):
        store.get(running["id"])
    assert files(tmp_path) == set()


def test_a_clock_step_back_does_not_prune_new_events_first(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=3, max_bytes=10**9)
    future = [record(JAN_2030 + i) for i in range(3)]  # booted with the clock years ahead
    for event in future:
        store.save(event, b"j")
    now = [record(NOV_2026 + i) for i in range(2)]  # NTP set the clock right
    for event in now:
        store.save(event, b"j")
    listed, total = store.list()
    assert total == 3
    assert [e["id"] for e in listed] == [now[1]["id"], now[0]["id"], future[2]["id"]]  # newest first, by order
    restarted = EventStore(tmp_path, max_count=3, max_bytes=10**9)
    assert [e["id"] for e in restarted.list()[0]] == [e["id"] for e in listed]


def test_motion_ends_on_time_when_the_wall_clock_jumps() -> None:
    for jump in (-3600.0, 3600.0):
        tracker = MotionEventTracker(start_frames=1, event_gap=2.0)
        moving, still = MotionResult(motion=True, area=0.1, score=0.5), MotionResult(motion=False)
        start = tracker.update(moving, NOV_2026, monotonic=100.0)
        assert start is not None and start.kind == "start"
        assert tracker.update(still, NOV_2026 + jump + 1.0, monotonic=101.0) is None  # NTP stepped the clock
        end = tracker.update(still, NOV_2026 + jump + 2.0, monotonic=102.0)
        assert end is not None and end.kind == "end", jump  # two seconds of real time, whatever the clock said


def test_disk_full_prunes_the_oldest_and_keeps_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC injected: the card holds 50 kB; every write beyond that fails as a full card's does."""
    folder = tmp_path / "events"
    real_write = events_module.durable_write

    def small_card(path: Path, data: bytes) -> None:
        used = sum(p.stat().st_size for p in folder.iterdir() if p.name != path.name)
        if used + len(data) > 50_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(events_module, "durable_write", small_card)
    store = EventStore(folder, max_count=1000, max_bytes=10**9)
    saved = [record(NOV_2026 + i) for i in range(20)]
    for event in saved:
        store.save(event, b"\xff\xd8" + b"x" * 8_000)
    listed, total = store.list()
    assert 1 <= total < 20 and listed[0]["id"] == saved[-1]["id"]  # the newest is always there
    assert store.total_bytes() == sum(p.stat().st_size for p in folder.iterdir()) <= 50_000
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]


def test_a_full_disk_never_reaches_the_camera(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(events_module, "durable_write", full)
    heard: list[tuple[str, dict[str, Any]]] = []
    recorder = EventRecorder(EventStore(tmp_path, max_count=10, max_bytes=10**6),
                             on_saved=lambda kind, rec: heard.append((kind, rec)))
    recorder.save_snapshot(b"\xff\xd8", NOV_2026)
    recorder.flush()
    recorder.close()
    assert heard and heard[0][1]["has_snapshot"] is False  # the page still hears of it


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    with helpers.small_tmpfs(tmp_path / "card", "512k") as mount:
        yield mount


@pytest.mark.root
def test_a_real_full_filesystem_keeps_the_newest_events_and_the_free_space_floor(small_tmpfs: Path) -> None:
    store = EventStore(small_tmpfs / "events", max_count=1000, max_bytes=10**9, min_free_bytes=100_000)
    saved = [record(NOV_2026 + i) for i in range(40)]
    for event in saved:
        store.save(event, os.urandom(30_000))  # 40 x 30 kB: more than the 512 kB there is
    listed, total = store.list()
    assert 0 < total < 40 and listed[0]["id"] == saved[-1]["id"]
    assert shutil.disk_usage(small_tmpfs).free >= 100_000 - 30_000  # the floor, give or take the last write
    assert store.total_bytes() == sum(p.stat().st_size for p in (small_tmpfs / "events").iterdir())
    store_without_floor = EventStore(small_tmpfs / "events", max_count=1000, max_bytes=10**9)
    for event in [record(NOV_2026 + 100 + i) for i in range(40)]:
        store_without_floor.save(event, os.urandom(30_000))  # fills the card: ENOSPC, pruning, retry
    assert store_without_floor.list()[1] > 0


@pytest.mark.root
def test_a_clip_on_a_full_card_pushes_out_the_oldest_and_stays_whole(small_tmpfs: Path) -> None:
    """A real 512 kB filesystem: a clip that grows into a full card makes room from the oldest
    events (ENOSPC, pruning, the frame written again), and what it keeps reads back whole."""
    folder = small_tmpfs / "events"
    store = EventStore(folder, max_count=1000, max_bytes=10**9)
    old = [record(NOV_2026 + i) for i in range(8)]
    for event in old:
        store.save(event, os.urandom(40_000))  # 320 kB of older events
    clip = record(NOV_2026 + 100)
    assert store.begin_clip(clip["id"], 320, 240, 10)
    store.save(clip)
    frame = b"\xff\xd8" + os.urandom(20_000) + b"\xff\xd9"
    written = 0
    try:
        for i in range(40):  # 800 kB of clip: more than the card holds
            assert store.append_clip(clip["id"], frame, NOV_2026 + 100 + i / 10, i / 10)
            written += 1
    except OSError as exc:  # only once nothing older is left to remove
        assert exc.errno == errno.ENOSPC and store.count() == 1
    assert written > 12, "the clip did not get the room the older events held"
    assert store.count() < 9 and store.get(clip["id"])["clip"]["frames"] == written
    store.finish_clip(clip["id"])
    assert store.total_bytes() == sum(p.stat().st_size for p in folder.iterdir())
    reopened = EventStore(folder, max_count=1000, max_bytes=10**9)
    assert reopened.get(clip["id"])["clip"]["frames"] == written


CUT_SHORT = """
import os, sys, threading
from pathlib import Path
from appliance.controller import StateFile

state = Path(sys.argv[1])
StateFile(state / "state.json").save(False)  # a whole write first: the file a power cut must leave
real_fsync = os.fsync

def power_cut(fd):  # the data is in the temporary file, the rename has not happened: the power goes
    real_fsync(fd)
    print("cut", flush=True)
    threading.Event().wait()

os.fsync = power_cut
StateFile(state / "state.json").save(True)
"""


def test_a_state_write_cut_short_leaves_the_old_state_and_start_up_removes_its_leftover(
        start_appliance: Any, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", CUT_SHORT, str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "cut\n"
    finally:
        writer.kill()  # SIGKILL: no finally block, no clean-up, as when the power goes
        writer.wait(10)
    leftovers = [path.name for path in state.iterdir() if path.name.startswith(".tmp-")]
    assert len(leftovers) == 1 and json.loads((state / leftovers[0]).read_text())["on"] is True
    (state / ".tmp-motion-cut").write_bytes(b'{"enabled": fal')  # and one of motion.json's, half written

    app = start_appliance()
    assert sorted(path.name for path in state.iterdir() if path.name.startswith(".tmp-")) == []
    assert requests.get(app.url + "/api/camera", timeout=5).json()["on"] is False  # the old state, whole
    assert app.controller.state_file_problem is None
