"""The motion history: limits, persistence, path safety, and its HTTP API and live feed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from appliance.history.events import EventStore, UnknownEvent
from appliance.motion.events import new_event_id


def record(started_at: float) -> dict[str, Any]:
    return {"id": new_event_id(started_at), "started_at": started_at, "ended_at": started_at + 5,
            "box": {"x": 1, "y": 2, "w": 3, "h": 4}, "peak_score": 0.5, "peak_area": 0.1, "frames": 9}


def test_count_limit_removes_the_oldest(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=3, max_bytes=10**9)
    records = [record(1_700_000_000 + i * 60) for i in range(5)]
    for r in records:
        store.save(r, b"\xff\xd8jpeg\xff\xd9")
    events, total = store.list()
    assert total == 3
    assert [e["id"] for e in events] == [r["id"] for r in reversed(records[2:])]
    assert not (tmp_path / f"{records[0]['id']}.jpg").exists()
    assert not (tmp_path / f"{records[0]['id']}.json").exists()


def test_size_limit_removes_the_oldest(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=100, max_bytes=10_000)
    for i in range(6):
        store.save(record(1_700_000_000 + i * 60), b"x" * 3000)
    assert store.total_bytes() <= 10_000
    _, total = store.list()
    assert total == 3
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 10_000


def test_events_survive_a_restart_and_end_updates_keep_the_snapshot(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    start = record(1_700_000_000)
    store.save({**start, "ended_at": None}, b"JPEGDATA")
    store.save(start)  # the end: no new snapshot
    again = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    assert again.get(start["id"])["ended_at"] == start["ended_at"]
    assert again.get(start["id"])["has_snapshot"] is True
    assert again.snapshot(start["id"]) == b"JPEGDATA"


def test_objects_are_kept_with_their_event_through_its_end_a_restart_and_its_deletion(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    start, other = record(1_700_000_000), record(1_700_000_100)
    store.save({**start, "ended_at": None}, b"JPEGDATA")
    store.save(other, b"J")
    person = {"object_id": 4, "label": "person", "score": 0.81, "box": {"x": 1, "y": 2, "w": 3, "h": 4},
              "frame": {"width": 640, "height": 480}, "kind": "alert"}
    assert store.save_object(start["id"], person, b"PERSON")
    assert store.save_object(start["id"], {**person, "score": 0.9}, b"BETTER")  # the same object, seen better
    assert store.save_object(start["id"], {**person, "object_id": 5, "label": "dog"}, None)
    store.save(start)  # the event's end rewrites its record: what detection added stays
    again = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    kept = again.get(start["id"])
    assert kept["alert"] is True and kept["labels"] == ["dog", "person"]
    assert [(o["number"], o["label"], o["score"]) for o in kept["objects"]] == [(1, "person", 0.9), (2, "dog", 0.81)]
    assert again.object_snapshot(start["id"], 1) == b"BETTER"
    with pytest.raises(UnknownEvent):
        again.object_snapshot(start["id"], 2)  # seen, but no picture was kept
    assert again.list(label="dog")[1] == 1 and again.list(label="cat")[1] == 0
    assert again.total_bytes() >= len(b"JPEGDATA") + len(b"BETTER")
    (tmp_path / f"{new_event_id(1_600_000_000)}.o1.jpg").write_bytes(b"orphan")  # no record: removed at start
    again.delete(start["id"])
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([f"{other['id']}.json", f"{other['id']}.jpg",
                                                                      next(p.name for p in tmp_path.glob("*.o1.jpg"))])
    EventStore(tmp_path, max_count=10, max_bytes=10**6)
    assert list(tmp_path.glob("*.o1.jpg")) == []
    assert not again.save_object(start["id"], person, b"LATE")  # a deleted event takes no late objects


def test_paging_and_delete(tmp_path: Path) -> None:
    store = EventStore(tmp_path, max_count=10, max_bytes=10**6)
    ids = []
    for i in range(5):
        r = record(1_700_000_000 + i)
        ids.append(r["id"])
        store.save(r, b"j")
    page, total = store.list(offset=1, limit=2)
    assert total == 5 and [e["id"] for e in page] == [ids[3], ids[2]]
    store.delete(ids[0])
    with pytest.raises(UnknownEvent):
        store.get(ids[0])
    with pytest.raises(UnknownEvent):
        store.delete(ids[0])


@pytest.mark.parametrize("bad", ["../state", "..", "20231114T221320Z-abcdef/../../x", "/etc/passwd",
                                 "20231114T221320Z-ABCDEF", "state.json", "", "x" * 300])
def test_ids_that_are_not_event_ids_address_nothing(tmp_path: Path, bad: str) -> None:
    (tmp_path / "state.json").write_text("{}")
    store = EventStore(tmp_path / "events", max_count=10, max_bytes=10**6)
    for call in (store.get, store.snapshot, store.delete):
        with pytest.raises(UnknownEvent):
            call(bad)
    assert (tmp_path / "state.json").exists()


def test_http_events_api_and_traversal(start_appliance: Any, tmp_path: Path) -> None:
    app = start_appliance()
    r = record(1_700_000_000)
    app.events.save(r, b"\xff\xd8JPEG")
    listing = requests.get(app.url + "/api/events", timeout=5).json()
    assert listing["total"] == 1 and listing["events"][0]["id"] == r["id"]
    snap = requests.get(f"{app.url}/api/events/{r['id']}/snapshot.jpg", timeout=5)
    assert snap.status_code == 200 and snap.headers["Content-Type"] == "image/jpeg"
    for bad in ["..%2Fstate.json", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", "nope", "20231114T221320Z-abcdef"]:
        response = requests.get(f"{app.url}/api/events/{bad}/snapshot.jpg", timeout=5)
        assert response.status_code == 404, bad
        assert "error" in response.json()
    assert requests.get(app.url + "/api/events?limit=0", timeout=5).status_code == 400
    assert "whole number" in requests.get(app.url + "/api/events?limit=x", timeout=5).json()["error"]
    assert requests.delete(f"{app.url}/api/events/{r['id']}", timeout=5).status_code == 200
    assert requests.delete(f"{app.url}/api/events/{r['id']}", timeout=5).status_code == 404
    assert requests.get(app.url + "/api/events", timeout=5).json()["total"] == 0


def test_motion_events_are_recorded_and_announced_live(start_appliance: Any) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 3, "motion_period": 2, "motion_duration": 0.8}},
                          motion={"warmup_frames": 5, "event_gap": 0.3, "background_weight": 1.0})
    with requests.get(app.url + "/api/events/live", stream=True, timeout=20) as feed:
        assert feed.headers["Content-Type"].startswith("text/event-stream")
        requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
        kinds = []
        event_id = None
        for line in feed.iter_lines(decode_unicode=True):
            if line.startswith("event: "):
                kinds.append(line[7:])
            elif line.startswith("data: ") and kinds[-1] == "motion" and '"end"' in line:
                event_id = line.split('"id": "')[1].split('"')[0]
                break
    assert "state" in kinds and "status" in kinds and kinds.count("motion") >= 2
    assert event_id is not None
    stored = requests.get(f"{app.url}/api/events/{event_id}", timeout=5).json()
    assert stored["ended_at"] and stored["has_snapshot"]
    assert requests.get(f"{app.url}/api/events/{event_id}/snapshot.jpg", timeout=5).status_code == 200
