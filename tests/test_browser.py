"""The page in a real browser: Debian's Chromium driven by Playwright against the real server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.helpers import decode_jpeg, scene_event, start_scene, wait_for_motion_settings, wait_for_picture_settings

pytestmark = [pytest.mark.browser]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def csp_violations(page: Page) -> list[str]:
    """Collects what the page's Content-Security-Policy blocked: the page must need nothing it forbids."""
    blocked: list[str] = []
    page.on("console", lambda message: blocked.append(message.text) if "Content Security Policy" in message.text
            else None)
    return blocked


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    blocked = csp_violations(page)
    yield page
    context.close()
    assert blocked == []


PICTURE = "#view .picture:visible"
"""The live picture shown: the H.264 <video> or the MJPEG (or snapshot) <img>."""
MJPEG_MODE = "localStorage.setItem('appliance.view-mode', 'mjpeg')"
"""An init script: this browser chose MJPEG by hand (before the page loads)."""


def wait_for_live_picture(page: Page) -> None:
    """The page marks the live view loaded at the stream's first frame (an MJPEG <img> fires load
    then; the H.264 <video> counts its first frame shown).

    Playwright's wait_for_function would evaluate a string in the page, which the CSP forbids.
    """
    expect(page.locator(PICTURE)).to_have_attribute("data-loaded", "true")


def live_pixels(page: Page) -> np.ndarray:
    png = page.locator(PICTURE).screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_click_turns_the_camera_on_and_shows_a_real_picture(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "synthetic": {"objects": 3}})
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#camera-state")).to_have_text("off")
    expect(page.locator(PICTURE)).to_have_count(0)
    page.click("#camera-toggle")
    expect(page.locator("#camera-state")).to_have_text("on")
    expect(page.locator("#camera-toggle")).to_have_text("Turn off")
    wait_for_live_picture(page)  # Chromium plays H.264: the picture is the <video>
    assert page.locator("#live-video").evaluate("video => video.videoWidth") == 640
    pixels = live_pixels(page)
    assert pixels.std() > 10, "the live view is blank"
    assert app.controller.state.value == "on"


def test_a_rest_switch_off_shows_without_reload(start_appliance: Any, page: Page) -> None:
    app = start_appliance()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(page)
    page.evaluate("window.__marker = 'same page'")
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    expect(page.locator("#camera-state")).to_have_text("off", timeout=2_000)
    expect(page.locator(PICTURE)).to_have_count(0)
    expect(page.locator("#offline-text")).to_have_text("The camera is off.")
    assert page.evaluate("window.__marker") == "same page"  # no reload happened


def test_motion_lights_the_indicator_and_adds_an_event(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "synthetic": {"objects": 3, "motion_period": 6,
                                                                    "motion_duration": 2}},
                          motion={"warmup_frames": 5, "event_gap": 1.0})
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#events li")).to_have_count(0)
    page.click("#camera-toggle")
    expect(page.locator("#motion-indicator")).to_have_attribute("data-active", "true", timeout=15_000)
    expect(page.locator("#events li")).to_have_count(1, timeout=15_000)
    thumbnail = page.locator("#events li img").first
    expect(thumbnail).to_have_js_property("complete", True)
    assert thumbnail.evaluate("img => img.naturalWidth") > 0
    expect(page.locator("#motion-indicator")).to_have_attribute("data-active", "false", timeout=15_000)
    ARTIFACTS.mkdir(exist_ok=True)
    wait_for_live_picture(page)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)
    assert (ARTIFACTS / "page.png").stat().st_size > 10_000
    assert thumbnail.get_attribute("src", timeout=1_000)


def test_page_works_on_a_phone_and_needs_nothing_external(start_appliance: Any, browser: Browser) -> None:
    app = start_appliance()
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    outside: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(app.url) else outside.append(r.url))
    page.goto(app.url + "/", wait_until="domcontentloaded")
    page.tap("#camera-toggle")
    expect(page.locator("#camera-state")).to_have_text("on")
    box = page.locator("#camera-toggle").bounding_box()
    assert box is not None and box["height"] >= 40  # a comfortable touch target
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    context.close()
    assert outside == []


def test_with_login_the_page_stream_and_live_feed_work_after_credentials(start_appliance: Any,
                                                                          browser: Browser) -> None:
    from appliance.passwords import hash_password

    app = start_appliance(server={"auth": {"username": "admin", "password_hash": hash_password("pw-for-test")}})
    assert requests.get(app.url + "/", timeout=10).status_code == 401  # a browser asks for the password here
    context = browser.new_context(http_credentials={"username": "admin", "password": "pw-for-test"})
    page = context.new_page()
    page.set_default_timeout(15_000)
    blocked = csp_violations(page)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    page.click("#camera-toggle")
    expect(page.locator("#camera-state")).to_have_text("on")
    wait_for_live_picture(page)
    # The live feed (server-sent events) carries a change made elsewhere.
    requests.put(app.url + "/api/camera", json={"on": False}, auth=("admin", "pw-for-test"), timeout=20)
    expect(page.locator("#camera-state")).to_have_text("off", timeout=3_000)
    context.close()
    assert blocked == []


def test_a_zone_drawn_on_the_page_is_stored_and_applied(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "synthetic": {"objects": 3}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(page)
    expect(page.locator("#zones-text")).to_have_text("No zones: the whole picture is watched.")
    page.select_option("#zone-mode", "include")
    page.click("#zone-draw")
    expect(page.locator("#zone-save")).to_be_disabled()
    box = page.locator(PICTURE).bounding_box()
    assert box is not None
    corners = [(0.1, 0.1), (0.6, 0.1), (0.6, 0.8), (0.1, 0.8)]
    for x, y in corners:  # relative to the picture: Playwright scrolls it into view first
        page.locator(PICTURE).click(position={"x": x * box["width"], "y": y * box["height"]})
    expect(page.locator("#zone-draft")).to_be_visible()
    page.click("#zone-save")
    expect(page.locator("#zones-text")).to_have_text("Zones: zone 1 (watched)")
    stored = requests.get(app.url + "/api/motion", timeout=5).json()["zones"]
    assert len(stored) == 1 and stored[0]["mode"] == "include"
    for (x, y), (sx, sy) in zip(corners, stored[0]["points"], strict=True):
        assert abs(x - sx) < 0.02 and abs(y - sy) < 0.02, stored
    assert app.motion.settings.zones[0].mode == "include"  # what the capture thread reads at each frame
    # Applied: the stream's overlay outlines the watched area in yellow (nothing else in the demo is).
    frames = app.pipeline.stats().frames_captured
    assert app.pipeline.wait_for_frames(frames + 3, timeout=10)
    jpeg = requests.get(app.url + "/snapshot.jpg", timeout=10).content
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    # Yellow: the demo's objects all have blue above 120, its background has red below 90.
    yellow = (image[..., 0] < 120) & (image[..., 1] > 190) & (image[..., 2] > 200)
    ys, xs = np.nonzero(yellow)
    assert len(xs) > 200, "no zone outline on the picture"
    assert abs(xs.min() / 640 - 0.1) < 0.02 and abs(xs.max() / 640 - 0.6) < 0.02
    assert abs(ys.min() / 360 - 0.1) < 0.02 and abs(ys.max() / 360 - 0.8) < 0.02
    # Clearing on the page removes it everywhere.
    page.click("#zones-clear")
    expect(page.locator("#zones-text")).to_have_text("No zones: the whole picture is watched.")
    assert app.motion.settings.zones == []


def test_motion_settings_changed_elsewhere_show_on_the_page(start_appliance: Any, page: Page) -> None:
    app = start_appliance()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#motion-enabled")).to_be_checked()
    requests.put(app.url + "/api/motion", json={"enabled": False, "sensitivity": "high"}, timeout=5)
    expect(page.locator("#motion-enabled")).not_to_be_checked()
    expect(page.locator("#motion-sensitivity")).to_have_value("high")
    page.select_option("#motion-sensitivity", "low")
    page.check("#motion-enabled")
    expect(page.locator("#motion-enabled")).to_be_checked()  # the box is ticked before its PUT has landed
    wait_for_motion_settings(app, lambda settings: settings.enabled and settings.sensitivity == "low")
    body = requests.get(app.url + "/api/motion", timeout=5).json()
    assert body["sensitivity"] == "low" and body["enabled"] is True


# --- clips, hidden tabs, snapshot mode, several tabs --------------------------------------------------

def set_shown(page: Page, shown: bool) -> None:
    """Emulate the tab being hidden or shown again: the browser's visibilityState and its event."""
    page.evaluate("""shown => {
        Object.defineProperty(document, "visibilityState", { value: shown ? "visible" : "hidden", configurable: true });
        Object.defineProperty(document, "hidden", { value: !shown, configurable: true });
        document.dispatchEvent(new Event("visibilitychange"));
    }""", shown)


def video_state(page: Page, selector: str) -> dict[str, Any]:
    return page.evaluate("""selector => {
        const video = document.querySelector(selector);
        if (!video) return null;
        return { time: video.currentTime, frames: video.getVideoPlaybackQuality().totalVideoFrames,
                 duration: video.duration, paused: video.paused, error: video.error && video.error.code,
                 src: video.currentSrc };
    }""", selector)


def wait_for_video(page: Page, selector: str, check: Any, timeout: float = 15) -> dict[str, Any]:
    """Poll the <video>'s state (evaluate: the page's CSP forbids Playwright's wait_for_function)."""
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = video_state(page, selector)
        if state is not None and check(state):
            return state
        page.wait_for_timeout(100)
    raise AssertionError(f"{selector}: {state}")


def test_an_mp4_clip_plays_in_a_video_element_and_seeks_by_range(start_appliance: Any, page: Page,
                                                                 tmp_path: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path)
    clip = scene_event(app, camera, feed, moving_frames=40)["clip"]
    assert clip["format"] == "mp4"
    ranges: list[str] = []
    page.on("request", lambda request: ranges.append(request.headers.get("range", ""))
            if "/clip.mp4" in request.url else None)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    item = page.locator("#events li").first
    expect(item).to_have_attribute("data-clip", "true")
    expect(item.locator("a.clip")).to_have_attribute("download", re.compile(r"\.mp4$"))
    item.locator("img").click()
    expect(item).to_have_attribute("data-playing", "true")
    expect(item.locator("video")).to_be_visible()
    expect(item.locator("img")).to_be_hidden()
    played = wait_for_video(page, "#events video", lambda v: v["time"] > 1.0 and v["frames"] > 10)
    assert played["error"] is None and abs(played["duration"] - clip["seconds"]) < 0.5
    # Seek back: the player asks for the bytes it needs by range, the server answers 206.
    page.evaluate("""() => { const v = document.querySelector("#events video"); v.pause(); v.currentTime = 0.4; }""")
    sought = wait_for_video(page, "#events video", lambda v: abs(v["time"] - 0.4) < 0.05)
    assert sought["error"] is None
    assert any(value.startswith("bytes=") for value in ranges), ranges
    answer = requests.get(app.url + "/api/events/" + clip_id(page) + "/clip.mp4", headers={"Range": "bytes=0-1"},
                          timeout=5)
    assert answer.status_code == 206
    page.evaluate("""() => document.querySelector("#events video").play()""")
    # At its end the thumbnail comes back and the <video> (and its connection) goes.
    expect(item).to_have_attribute("data-playing", "false", timeout=int((clip["seconds"] + 5) * 1000))
    expect(item.locator("video")).to_have_count(0)
    expect(item.locator("img")).to_be_visible()


def clip_id(page: Page) -> str:
    return page.locator("#events li").first.get_attribute("data-id") or ""


def test_the_recordings_timeline_plays_footage_from_an_event_on(start_appliance: Any, page: Page,
                                                                tmp_path: Path) -> None:
    app, camera, feed = start_scene(start_appliance, tmp_path,
                                    recording={"continuous": {"enabled": True, "segment_seconds": 2}})
    assert app.pipeline.wait_for_frames(60, timeout=10)  # a few segments before the event
    record = scene_event(app, camera, feed, still_frames=10, moving_frames=20)
    assert app.recordings is not None
    folder = app.recordings.folder

    def kept_around_the_event() -> bool:  # the segment with its start, and the one after, are finished
        found = folder.covering(record["started_at"])
        return found is not None and any(r.start > found[0].start for r in folder.files("continuous"))

    deadline = time.monotonic() + 15
    while not kept_around_the_event():  # segments end every 2 s: nothing to wait on from here
        assert time.monotonic() < deadline, folder.files("continuous")
        time.sleep(0.2)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#recordings")).to_be_visible()
    expect(page.locator("#rec-timeline .segment").nth(2)).to_be_attached()  # three or more, once loaded
    expect(page.locator("#rec-timeline .event-mark")).to_have_count(1)
    expect(page.locator("#rec-fault")).to_be_hidden()
    item = page.locator("#events li").first
    expect(item.locator("a.footage")).to_be_visible()
    item.locator("a.footage").click()
    expect(page.locator("#rec-player")).to_be_visible()
    segment, offset = folder.covering(record["started_at"])  # type: ignore[misc]
    state = wait_for_video(page, "#rec-player", lambda v: v["frames"] > 5 and not v["paused"])
    assert state["src"].endswith(segment.name) and state["time"] >= offset - 0.2
    # At the segment's end the next one follows on.
    following = wait_for_video(page, "#rec-player", lambda v: not v["src"].endswith(segment.name), timeout=10)
    assert following["error"] is None


def test_clicking_an_event_plays_its_clip_in_place(start_appliance: Any, page: Page, tmp_path: Path) -> None:
    """A Motion-JPEG clip (kept by earlier versions, or without PyAV) replays in the thumbnail's place."""
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"format": "mjpeg"})
    seconds = scene_event(app, camera, feed, moving_frames=40)["clip"]["seconds"]
    page.goto(app.url + "/", wait_until="domcontentloaded")
    item = page.locator("#events li").first
    expect(item).to_have_attribute("data-clip", "true")
    expect(item.locator("a.clip")).to_have_text(f"⬇ {round(seconds)} s clip")
    thumbnail = item.locator("img")
    expect(thumbnail).to_have_js_property("complete", True)
    item.locator("img").click()
    expect(item).to_have_attribute("data-playing", "true")
    assert "/clip.mjpg" in (thumbnail.get_attribute("src") or "")
    replaying = requests.get(app.url + "/api/status", timeout=5).json()["clips"]["replaying"]
    assert replaying == 1
    expect(thumbnail).to_have_js_property("naturalWidth", 320)  # the clip's first picture is on the page
    # At its end the thumbnail comes back, and the replay's connection is gone.
    expect(item).to_have_attribute("data-playing", "false", timeout=int((seconds + 5) * 1000))
    assert (thumbnail.get_attribute("src") or "").endswith("/snapshot.jpg")
    assert requests.get(app.url + "/api/status", timeout=5).json()["clips"]["replaying"] == 0
    assert item.locator("time").is_visible() and item.locator("button").is_visible()  # time and delete stay


def streaming(app: Any, mode: str, count: int, timeout: float = 10) -> bool:
    """Whether ``count`` streams of ``mode`` (h264, mjpeg) are open, and none of the other, in time."""
    h264, mjpeg = (count, 0) if mode == "h264" else (0, count)
    return app.h264_viewers.wait_for(lambda v: v.viewers == h264, timeout) \
        and app.broadcaster.wait_for_viewers(mjpeg, timeout=timeout)


@pytest.mark.parametrize("mode", ["h264", "mjpeg"])
def test_a_hidden_tab_closes_its_stream_and_feed_and_reopens_them_when_shown(start_appliance: Any,
                                                                            page: Page, mode: str) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    if mode == "mjpeg":
        page.add_init_script(MJPEG_MODE)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("body")).to_have_attribute("data-view-mode", mode)
    wait_for_live_picture(page)
    assert streaming(app, mode, 1) and app.live.wait_for_clients(1, timeout=10)
    set_shown(page, False)
    assert streaming(app, mode, 0), "the hidden tab still streams"
    assert app.live.wait_for_clients(0, timeout=10), "the hidden tab still follows the live feed"
    expect(page.locator("#offline-text")).to_have_text("Paused while the page is hidden.")
    set_shown(page, True)
    wait_for_live_picture(page)
    assert streaming(app, mode, 1) and app.live.wait_for_clients(1, timeout=10)
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    expect(page.locator("#camera-state")).to_have_text("off")  # the feed works again


def at_least(count: int) -> re.Pattern[str]:
    """A pattern matching a counter's value from ``count`` to ``count`` + 999 (far more than a test sees)."""
    return re.compile("^(" + "|".join(str(value) for value in range(count, count + 1000)) + ")$")


def test_snapshot_mode_updates_the_picture_without_a_stream(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(page)
    expect(page.locator("body")).to_have_attribute("data-view-mode", "h264")
    page.select_option("#view-mode", "snapshots")
    expect(page.locator("body")).to_have_attribute("data-view-mode", "snapshots")
    expect(page.locator("#view-mode-text")).to_contain_text("Snapshots")
    assert streaming(app, "mjpeg", 0), "a stream stayed open"
    # A counter the page bumps 4 times a second: wait for "at least", since Playwright's polling (up to
    # a second apart) may never see one exact value.
    expect(page.locator("#live")).to_have_attribute("data-snapshots", at_least(8), timeout=10_000)  # about 2 s
    before = live_pixels(page)
    seen = int(page.locator("#live").get_attribute("data-snapshots") or 0)
    expect(page.locator("#live")).to_have_attribute("data-snapshots", at_least(seen + 8), timeout=10_000)
    assert np.abs(live_pixels(page).astype(int) - before).mean() > 0.5, "the picture did not change"
    assert app.broadcaster.viewers == 0
    page.reload(wait_until="domcontentloaded")  # the choice is kept
    expect(page.locator("body")).to_have_attribute("data-view-mode", "snapshots")
    wait_for_live_picture(page)


IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.5 Mobile/15E148 Safari/604.1")
MAC_SAFARI = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 "
              "Safari/605.1.15")
# Init scripts that make Chromium's Media Source Extensions look like another browser's, before the page loads.
NO_MSE = "delete window.MediaSource; delete window.ManagedMediaSource;"
MANAGED_MSE = "window.ManagedMediaSource = window.MediaSource; delete window.MediaSource;"  # Safari 17.1+ on iPhones


@pytest.mark.parametrize(("agent", "touch", "mse", "mode"), [
    (IPHONE, True, MANAGED_MSE, "h264"),  # iOS 17.1 and later: ManagedMediaSource plays H.264
    (IPHONE, True, NO_MSE, "snapshots"),  # older iPhones: no MSE, and MJPEG shows one picture only
    (IPHONE.replace("Version/17.5", "CriOS/126.0"), True, NO_MSE, "snapshots"),  # Chrome on iOS is WebKit too
    (MAC_SAFARI, True, NO_MSE, "snapshots"),  # an iPad asking for the desktop site: touch gives it away
    (MAC_SAFARI, False, NO_MSE, "mjpeg"),  # Safari on a Mac plays MJPEG
    (MAC_SAFARI, False, "", "h264"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile "
     "Safari/537.36", True, "", "h264"),
])
def test_the_automatic_mode_follows_what_the_browser_plays(start_appliance: Any, browser: Browser, agent: str,
                                                           touch: bool, mse: str, mode: str) -> None:
    app = start_appliance()
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    context = browser.new_context(user_agent=agent, has_touch=touch, is_mobile=touch and "Mac" not in agent)
    # Chromium's touch emulation reports one touch point; iPhones and iPads report five.
    context.add_init_script(f"Object.defineProperty(navigator, 'maxTouchPoints', {{ get: () => {5 if touch else 0} }})")
    if mse:
        context.add_init_script(mse)
    page = context.new_page()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("body")).to_have_attribute("data-view-mode", mode)
    expect(page.locator("#view-mode")).to_have_value("auto")
    if mode != "h264":
        expect(page.locator("#view-mode-text")).to_contain_text("this browser does not play H.264")
    if mode == "snapshots":
        expect(page.locator("#view-mode-text")).to_contain_text("does not play MJPEG either")
    wait_for_live_picture(page)
    if mode == "h264":
        expect(page.locator("#live-video")).to_have_attribute("data-frames", at_least(10))
        assert page.locator("#live-video").evaluate("video => video.disableRemotePlayback") == (mse == MANAGED_MSE)
    context.close()


def test_four_tabs_share_one_live_feed_and_each_streams(start_appliance: Any, browser: Browser) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    context = browser.new_context()
    tabs = []
    for _ in range(4):
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        tab.goto(app.url + "/", wait_until="domcontentloaded")
        tabs.append(tab)
    # Four visible tabs: four streams and one feed, five connections (six is HTTP/1.1's limit per host).
    for tab in tabs:
        wait_for_live_picture(tab)
    assert streaming(app, "h264", 4)
    assert app.live.wait_for_clients(1, timeout=10), f"{app.live.clients} live feeds for one browser"
    # The usual case: the last tab is in front, the others are hidden. Whichever held the feed, the
    # tab in front still streams and hears the news.
    for tab in tabs[:3]:
        set_shown(tab, False)
    assert streaming(app, "h264", 1)
    assert app.live.wait_for_clients(1, timeout=10)
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    expect(tabs[3].locator("#camera-state")).to_have_text("off")
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    expect(tabs[3].locator("#camera-state")).to_have_text("on")
    wait_for_live_picture(tabs[3])
    context.close()


def test_chromium_finds_the_page_installable(start_appliance: Any, browser: Browser) -> None:
    """Chromium's own verdict (DevTools protocol): the manifest parses without an error, and nothing
    stops installing the page but the test's incognito-like profile."""
    app = start_appliance(name="Garden camera")
    context = browser.new_context()
    page = context.new_page()
    page.goto(app.url + "/", wait_until="load")
    devtools = context.new_cdp_session(page)
    manifest = devtools.send("Page.getAppManifest")
    assert manifest["errors"] == [] and manifest["url"].endswith("/manifest.webmanifest")
    assert manifest["manifest"]["name"] == "Garden camera" and manifest["manifest"]["display"] == "kStandalone"
    problems = devtools.send("Page.getInstallabilityErrors")["installabilityErrors"]
    assert [problem["errorId"] for problem in problems if problem["errorId"] != "in-incognito"] == []
    context.close()


def test_where_mjpeg_does_not_play_a_clip_plays_frame_by_frame(start_appliance: Any, browser: Browser,
                                                                tmp_path: Path) -> None:
    """iOS WebKit shows only the first picture of an MJPEG clip too: in snapshot mode the page shows
    the clip's frames one by one, at their times (Motion-JPEG clips; MP4 plays in a <video> there)."""
    app, camera, feed = start_scene(start_appliance, tmp_path, clip={"format": "mjpeg"})
    clip = scene_event(app, camera, feed)["clip"]
    context = browser.new_context(user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) "
                                  "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                                  has_touch=True, is_mobile=True)
    context.add_init_script(NO_MSE)  # an iPhone before iOS 17.1: no H.264 view either
    page = context.new_page()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("body")).to_have_attribute("data-view-mode", "snapshots")
    item = page.locator("#events li").first
    expect(item).to_have_attribute("data-clip", "true")
    began = time.monotonic()
    item.locator("img").click()
    expect(item).to_have_attribute("data-playing", "true")
    expect(item).to_have_attribute("data-clip-frame", str(clip["frames"]), timeout=int((clip["seconds"] + 5) * 1000))
    assert time.monotonic() - began >= clip["seconds"] - 0.3  # at the clip's pace, not as fast as it loads
    assert "/clip/" in (item.locator("img").get_attribute("src") or "")
    expect(item).to_have_attribute("data-playing", "false")
    assert app.broadcaster.viewers == 0 and requests.get(app.url + "/api/status", timeout=5).json()["clips"][
        "replaying"] == 0  # no MJPEG anywhere
    context.close()


def test_the_picture_panel_sets_controls_night_mode_and_draws_a_privacy_mask(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "synthetic": {"objects": 0}}, overlay={"timestamp": False})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(page)
    # The panel offers what the camera offers: the demo camera's controls, not a Pi's sharpness.
    expect(page.locator("#control-brightness")).to_have_attribute("min", "-1")
    expect(page.locator("#control-white_balance")).to_be_visible()
    assert page.locator("#control-sharpness").count() == 0
    before = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean()
    page.locator("#control-brightness").evaluate("el => { el.value = '0.6'; el.dispatchEvent(new Event('change')); }")
    wait_for_picture_settings(app, lambda settings: settings.controls.get("brightness") == 0.6)
    expect(page.locator("#control-brightness-value")).to_have_text("0.6")
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=5)
    assert decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content).mean() > before + 30
    page.select_option("#night-mode", "on")
    wait_for_picture_settings(app, lambda settings: settings.night_mode == "on")
    expect(page.locator("#night-active")).to_have_text("night mode is on")
    # A mask drawn on the picture: stored, red while drawn, black in what the camera sends.
    page.click("#mask-draw")
    expect(page.locator("#zone-draft")).to_have_attribute("data-target", "mask")
    box = page.locator(PICTURE).bounding_box()
    assert box is not None
    for x, y in [(0.05, 0.05), (0.45, 0.05), (0.45, 0.6), (0.05, 0.6)]:
        page.locator(PICTURE).click(position={"x": x * box["width"], "y": y * box["height"]})
    page.click("#zone-save")
    expect(page.locator("#masks-text")).to_have_text("Privacy masks: mask 1 (blacked out)")
    assert app.picture.settings.masks[0].name == "mask 1"
    assert requests.get(app.url + "/api/motion", timeout=5).json()["zones"] == []  # a mask, not a zone
    assert app.pipeline.wait_for_frames(app.pipeline.stats().frames_captured + 3, timeout=5)
    image = decode_jpeg(requests.get(app.url + "/snapshot.jpg", timeout=10).content)
    assert image[30:190, 40:260].max() < 25 and image[250:, 400:].mean() > 60
    page.click("#masks-clear")
    expect(page.locator("#masks-text")).to_have_text("No privacy masks: the whole picture is shown and stored.")
    assert app.picture.settings.masks == []


@pytest.mark.rtsp
def test_the_page_shows_the_rtsp_address_to_copy_and_its_clients(start_appliance: Any, page: Page) -> None:
    app = start_appliance(rtsp={"enabled": True, "port": 0})
    assert app.rtsp is not None
    app.controller.on()
    page.goto(app.url.replace("127.0.0.1", "localhost") + "/", wait_until="domcontentloaded")
    address = f"rtsp://localhost:{app.rtsp.server.port}/live"  # the host the browser reached the page at
    expect(page.locator("#rtsp-url")).to_have_text(address)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.locator("#rtsp-copy").click()
    expect(page.locator("#rtsp-copy")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == address
    # The count follows the clients (the page hears /api/status figures through its live feed).
    reader = subprocess.Popen(["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", address,
                               "-f", "null", "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        expect(page.locator("#rtsp-clients")).to_have_text("1", timeout=15_000)
    finally:
        reader.terminate()
        reader.wait(10)


def test_the_page_says_why_rtsp_is_off(start_appliance: Any, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    app = start_appliance(rtsp={"enabled": True, "port": 0})
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#rtsp-off")).to_contain_text("RTSP is off: no H.264 encoder: PyAV is not installed")


@pytest.mark.detection
def test_the_history_shows_what_was_seen_and_filters_by_label(start_appliance: Any, page: Page) -> None:
    from tests.helpers import FOOTAGE
    from tests.test_detection import News, footage

    app = start_appliance(**footage(FOOTAGE / "vtest.avi"))
    news = News(app)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    page.click("#camera-toggle")
    assert news.wait(lambda: len(news.alerts("person")) >= 1, 60)
    # The event shows its objects, each with its picture, as they come.
    chip = page.locator("#events li .objects a").first
    expect(chip).to_contain_text("person")
    expect(chip.locator("img")).to_have_attribute("src", re.compile(r"/api/events/.+/objects/1\.jpg$"))
    # The label filter: only events in which a car alerted (none here), then every event again.
    expect(page.locator("#label-filter")).to_be_visible()
    page.select_option("#events-label", "car")
    expect(page.locator("#events li")).to_have_count(0)
    expect(page.locator("#events-empty")).to_have_text("No event with a car yet.")
    page.select_option("#events-label", "person")
    expect(page.locator("#events li")).to_have_count(1)
    page.reload(wait_until="domcontentloaded")  # the choice is remembered by this browser
    expect(page.locator("#events-label")).to_have_value("person")
    page.select_option("#events-label", "")
    expect(page.locator("#events li")).not_to_have_count(0)
    # A zone drawn for one label: cars count only there (object detection's zone rule).
    page.select_option("#zone-mode", "include")
    page.select_option("#zone-label", "car")
    page.click("#zone-draw")
    box = page.locator(PICTURE).bounding_box()
    assert box is not None
    for x, y in [(0.1, 0.5), (0.9, 0.5), (0.9, 0.95)]:
        page.locator(PICTURE).click(position={"x": x * box["width"], "y": y * box["height"]})
    page.click("#zone-save")
    expect(page.locator("#zones-text")).to_have_text("Zones: zone 1 (watched, for car)")
    assert app.motion.settings.zones[0].labels == ["car"]


def test_the_page_arms_disarms_and_sends_a_test(start_appliance: Any, page: Page) -> None:
    from tests.notify_receivers import WebHook

    with WebHook() as hook:
        app = start_appliance(notify={"targets": [{"name": "hook", "url": f"json://127.0.0.1:{hook.port}/h",
                                                   "cooldown": 0}]})
        page.goto(app.url + "/", wait_until="domcontentloaded")
        expect(page.locator("#arm-state")).to_have_text("Armed (no schedule)")
        page.click("#arm-toggle")
        expect(page.locator("#arm-state")).to_have_text("Disarmed (manual)")
        assert app.arming.state().armed is False
        page.click("#arm-toggle")
        expect(page.locator("#arm-state")).to_have_text("Armed (manual)")
        page.click("#notify-test")
        expect(page.locator("#notify-answer")).to_contain_text("Sent to hook")
        assert hook.next()["title"] == "Camera appliance: Test message"
        expect(page.locator("#notify-targets li")).to_contain_text("last sent")  # from the next status


# --- the live view in H.264 -------------------------------------------------------------------------


def playback(page: Page) -> dict[str, Any]:
    """The <video>'s clock, frames decoded (Chromium's own count), the newest buffered time and the
    age the page measured of the frame it shows."""
    return page.locator("#live-video").evaluate("""video => {
        const quality = video.getVideoPlaybackQuality(), ranges = video.buffered;
        return { time: video.currentTime, frames: quality.totalVideoFrames, dropped: quality.droppedVideoFrames,
                 end: ranges.length ? ranges.end(ranges.length - 1) : 0, age: Number(video.dataset.frameAge),
                 at: performance.now() / 1000 };
    }""")


def test_the_page_plays_the_live_view_in_h264_near_the_live_edge(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "fps": 15, "synthetic": {"objects": 3, "motion_period": 2,
                                                                              "motion_duration": 2}},
                          rtsp={"fps": 15})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("body")).to_have_attribute("data-view-mode", "h264")
    expect(page.locator("#view-mode-text")).to_have_text("Live video (H.264)")
    wait_for_live_picture(page)
    assert streaming(app, "h264", 1)
    expect(page.locator("#live-video")).to_have_attribute("data-frames", at_least(15))  # a second in
    first, before = playback(page), live_pixels(page)
    page.wait_for_timeout(4_000)  # a measuring window: Chromium decodes at the camera's rate
    second, after = playback(page), live_pixels(page)
    elapsed = second["at"] - first["at"]
    assert abs((second["frames"] - first["frames"]) / elapsed - 15) < 1.5, (first, second)
    assert abs((second["time"] - first["time"]) - elapsed) < 0.5, (first, second)  # its clock runs
    assert np.abs(after.astype(int) - before).mean() > 0.5, "the picture did not change"
    assert second["end"] - second["time"] < 1.0 and 0 <= second["age"] < 1.0, second  # near live
    status = requests.get(app.url + "/api/status", timeout=5).json()
    assert status["h264_viewers"] == 1 and status["viewers"] == 0
    # The page stalls for 2.5 s (its main thread busy): the player skips forward to the live edge
    # rather than playing the backlog late.
    page.evaluate("() => { window.seeks = 0; document.getElementById('live-video')"
                  ".addEventListener('seeking', () => { window.seeks += 1; }); }")
    page.evaluate("() => { const until = Date.now() + 2500; while (Date.now() < until) { /* busy */ } }")
    expect(page.locator("#live-video")).to_have_attribute("data-frame-age", re.compile(r"^0\.[0-7]\d*$"))
    assert page.evaluate("() => window.seeks") >= 1
    # The camera off ends the stream and the page says so; on again, it plays again by itself.
    requests.put(app.url + "/api/camera", json={"on": False}, timeout=20).raise_for_status()
    expect(page.locator("#offline-text")).to_have_text("The camera is off.")
    expect(page.locator(PICTURE)).to_have_count(0)
    assert streaming(app, "h264", 0)
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    wait_for_live_picture(page)
    expect(page.locator("#live-video")).to_have_attribute("data-frames", at_least(15))
    again = playback(page)
    page.wait_for_timeout(2_000)
    assert playback(page)["time"] - again["time"] > 1.5


def test_without_media_source_extensions_the_page_falls_back_to_mjpeg(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.add_init_script(NO_MSE)
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("body")).to_have_attribute("data-view-mode", "mjpeg")
    expect(page.locator("#view-mode-text")).to_have_text(
        "Live video (MJPEG stream) (this browser does not play H.264 streams)")
    wait_for_live_picture(page)
    assert streaming(app, "mjpeg", 1)


def test_the_view_is_chosen_by_hand_and_remembered(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(page)
    assert streaming(app, "h264", 1)
    page.select_option("#view-mode", "mjpeg")
    expect(page.locator("#view-mode-text")).to_have_text("Live video (MJPEG stream)")
    wait_for_live_picture(page)
    assert streaming(app, "mjpeg", 1)
    page.reload(wait_until="domcontentloaded")
    expect(page.locator("#view-mode")).to_have_value("mjpeg")
    wait_for_live_picture(page)
    assert streaming(app, "mjpeg", 1)
    page.select_option("#view-mode", "h264")
    expect(page.locator("body")).to_have_attribute("data-view-mode", "h264")
    wait_for_live_picture(page)
    assert streaming(app, "h264", 1)


def test_over_the_h264_viewer_limit_a_page_shows_mjpeg_and_says_why(start_appliance: Any, browser: Browser) -> None:
    app = start_appliance(camera={"synthetic": {"objects": 2}}, stream={"max_h264_viewers": 1})
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    context = browser.new_context()
    first, second = context.new_page(), context.new_page()
    first.goto(app.url + "/", wait_until="domcontentloaded")
    wait_for_live_picture(first)
    assert streaming(app, "h264", 1)
    second.goto(app.url + "/", wait_until="domcontentloaded")
    expect(second.locator("body")).to_have_attribute("data-view-mode", "mjpeg")
    expect(second.locator("#view-mode-text")).to_contain_text("H.264 failed: H.264 viewer limit of 1 reached")
    wait_for_live_picture(second)
    assert app.broadcaster.wait_for_viewers(1, timeout=10) and app.h264_viewers.viewers == 1
    context.close()


def test_the_page_says_why_there_is_no_h264_view(start_appliance: Any, page: Page) -> None:
    app = start_appliance(stream={"h264": False})
    assert app.h264_viewers is None
    requests.put(app.url + "/api/camera", json={"on": True}, timeout=20).raise_for_status()
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#view-mode-text")).to_contain_text("the appliance serves no H.264 view")
    wait_for_live_picture(page)
    assert app.broadcaster.wait_for_viewers(1, timeout=10)
