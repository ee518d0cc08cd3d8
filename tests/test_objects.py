"""The object tracker and the detector's choice of region: pure logic, made-up detections.

What real footage does with the model is tests/test_detection.py; here each rule is held to its
word: one frame is not an object, a box that stays put never alerts, a fast car at a few detections a
second stays one object, zones count labels where the feet are, objects go when no longer seen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import AppConfig, ConfigError, ObjectRule, Zone, load_config
from appliance.detection.objects import Detection, ObjectTracker, iou, zone_allows
from appliance.motion.events import Box

SIZE = (1000, 1000)


def tracker(zones: list[Zone] | None = None, **rules: ObjectRule) -> ObjectTracker:
    return ObjectTracker(rules or {"person": ObjectRule(), "car": ObjectRule()}, stationary_seconds=10,
                         lost_seconds=3, zones=lambda: zones or [])


def person(x: int, score: float = 0.9, y: int = 400) -> Detection:
    return Detection("person", score, Box(x, y, 40, 100))


def test_a_walking_person_alerts_once_and_is_counted_until_lost() -> None:
    objects = tracker()
    assert objects.update([person(100)], SIZE, 0.0, "e1") == []  # one frame is not an object
    changes = objects.update([person(160)], SIZE, 0.33, "e1")
    assert [(kind, obj.label, obj.event_id) for kind, obj in changes] == [("alert", "person", "e1")]
    assert objects.counts() == {"person": 1, "car": 0}
    assert objects.update([person(220)], SIZE, 0.66, "e1") == []  # the same person: no second alert
    assert objects.expire(2.0) == [] and objects.counts()["person"] == 1
    gone = objects.expire(0.66 + 3.0)
    assert [obj.label for obj in gone] == ["person"] and objects.counts()["person"] == 0


def test_a_parked_car_found_at_every_detection_never_alerts() -> None:
    objects = tracker()
    for step in range(40):
        jitter = Box(700 + step % 3, 100 - step % 2, 200, 120)  # a detector's boxes wobble by a pixel or two
        assert objects.update([Detection("car", 0.95, jitter)], SIZE, step * 0.33, "e1") == []
    assert objects.counts()["car"] == 0
    (obj,) = objects.objects
    assert obj.stationary(39 * 0.33, 10) and not obj.alerted
    # Once it drives off it has moved: now it alerts.
    changes = objects.update([Detection("car", 0.95, Box(500, 100, 200, 120))], SIZE, 13.2, "e2")
    assert [(kind, obj.event_id) for kind, obj in changes] == [("alert", "e2")]


def test_low_or_one_off_scores_do_not_alert() -> None:
    objects = tracker()
    for step, score in enumerate([0.55, 0.6, 0.58, 0.62, 0.6]):  # moving, but never convincing
        assert objects.update([person(100 + 60 * step, score)], SIZE, step * 0.33, None) == []
    objects = tracker()
    assert objects.update([person(100, 0.45)], SIZE, 0.0, None) == []  # under min_score: not followed at all
    assert objects.objects == []


def test_a_fast_car_at_three_detections_a_second_stays_one_object() -> None:
    objects = tracker()
    kinds = []
    for step in range(6):  # 60 px a detection: further than its own width (40) would allow by overlap
        change = objects.update([Detection("car", 0.9, Box(50 + 60 * step, 500, 40, 30))], SIZE, step / 3, None)
        kinds += [kind for kind, _ in change]
    assert kinds == ["alert"] and len(objects.objects) == 1


def test_two_people_crossing_keep_their_own_objects() -> None:
    objects = tracker()
    alerts = []
    for step in range(5):
        found = [person(100 + 50 * step), person(800 - 50 * step, y=420)]
        alerts += [obj.id for kind, obj in objects.update(found, SIZE, step / 3, None) if kind == "alert"]
    assert sorted(alerts) == [1, 2] and objects.counts()["person"] == 2


def test_labels_not_wanted_and_sizes_out_of_rule_are_ignored() -> None:
    objects = tracker(person=ObjectRule(min_area=0.01, max_area=0.5))
    for step in range(4):
        objects.update([Detection("dog", 0.9, Box(100 * step, 100, 50, 50)),
                        Detection("person", 0.9, Box(100 * step, 500, 20, 30))],  # 0.06 % of the frame
                       SIZE, step / 3, None)
    assert objects.objects == []


def test_zones_count_labels_where_the_feet_are() -> None:
    drive = Zone(name="drive", mode="include", labels=["car"], points=[(0, 0.5), (1, 0.5), (1, 1), (0, 1)])
    street = Zone(name="street", mode="exclude", points=[(0, 0), (1, 0), (1, 0.2), (0, 0.2)])
    zones = [drive, street]
    assert zone_allows("car", Box(100, 600, 100, 100), SIZE, zones)  # on the drive
    assert not zone_allows("car", Box(100, 300, 100, 100), SIZE, zones)  # cars count only on the drive
    assert zone_allows("person", Box(100, 300, 100, 100), SIZE, zones)  # the drive zone is about cars only
    assert not zone_allows("person", Box(100, 0, 100, 150), SIZE, zones)  # feet on the street: excluded
    objects = tracker(zones=zones)
    for step in range(4):  # a car driving along the street above the drive never alerts
        changes = objects.update([Detection("car", 0.9, Box(60 * step, 300, 100, 60))], SIZE, step / 3, None)
        assert changes == []


def test_iou() -> None:
    assert iou(Box(0, 0, 10, 10), Box(0, 0, 10, 10)) == 1.0
    assert iou(Box(0, 0, 10, 10), Box(20, 20, 5, 5)) == 0.0
    assert iou(Box(0, 0, 10, 10), Box(5, 0, 10, 10)) == pytest.approx(50 / 150)


def test_the_region_is_a_square_around_motion_or_the_whole_frame() -> None:
    from appliance.detection.model import Region, region_for

    frame = (1280, 720)
    small = region_for((Box(600, 300, 40, 80),), frame, 300)
    assert (small.w, small.h) == (300, 300) and small.x <= 600 and small.x + small.w >= 640
    assert region_for((), frame, 300) == Region(0, 0, 1280, 720)
    assert region_for((Box(0, 0, 900, 600),), frame, 300) == Region(0, 0, 1280, 720)  # most of it: all of it
    edge = region_for((Box(1250, 680, 30, 40),), frame, 300)
    assert edge.x + edge.w == 1280 and edge.y + edge.h == 720  # kept inside the frame
    assert small.touches_inside(Box(small.x, small.y + 50, 30, 30), frame)  # cut by the crop's left edge
    assert not small.touches_inside(Box(small.x + 100, small.y + 100, 30, 30), frame)


def test_detection_settings_are_checked(tmp_path: Path) -> None:
    assert AppConfig().detection.enabled is False
    assert set(AppConfig().detection.objects) == {"person", "car", "dog", "cat"}
    path = tmp_path / "config.yaml"
    path.write_text("detection:\n  objects:\n    Person!: {}\n")
    with pytest.raises(ConfigError, match=r"detection\.objects"):
        load_config(path, environ={})
    path.write_text("detection:\n  objects:\n    person: {threshold: 2}\n")
    with pytest.raises(ConfigError, match="threshold"):
        load_config(path, environ={})


def test_the_model_sees_the_same_picture_from_the_camera_planes_as_from_bgr() -> None:
    """The Pi path hands the detector I420: cropped and scaled per plane, it must make the picture the
    BGR path makes (a model fed other colours would score otherwise)."""
    import cv2
    import numpy as np

    from appliance.camera_backends.yuv import from_bgr
    from appliance.detection.model import Region, model_input, region_for

    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 255, (36, 64, 3), dtype=np.uint8)
    image = cv2.resize(coarse, (1280, 720), interpolation=cv2.INTER_LINEAR)
    for region in (Region(0, 0, 1280, 720), region_for((Box(601, 301, 51, 77),), (1280, 720), 300)):
        from_planes = model_input(from_bgr(image), region, (300, 300)).astype(int)
        from_bgr_image = model_input(image, region, (300, 300)).astype(int)
        assert from_planes.shape == from_bgr_image.shape == (300, 300, 3)
        assert np.abs(from_planes - from_bgr_image).mean() < 4  # the colour at half resolution, no more
        assert np.abs((from_planes - from_bgr_image).mean(axis=(0, 1))).max() < 0.5  # and no shift of colour
