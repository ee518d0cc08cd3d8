"""The page in a real browser: Debian's Chromium driven by Playwright against the real server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

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


def wait_for_live_picture(page: Page) -> None:
    """The page marks the live view loaded at the stream's first frame (an MJPEG <img> fires load then).

    Playwright's wait_for_function would evaluate a string in the page, which the CSP forbids.
    """
    expect(page.locator("#live")).to_have_attribute("data-loaded", "true")


def live_pixels(page: Page) -> np.ndarray:
    png = page.locator("#live").screenshot()
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_click_turns_the_camera_on_and_shows_a_real_picture(start_appliance: Any, page: Page) -> None:
    app = start_appliance(camera={"size": "640x360", "synthetic": {"objects": 3}})
    page.goto(app.url + "/", wait_until="domcontentloaded")
    expect(page.locator("#camera-state")).to_have_text("off")
    expect(page.locator("#live")).to_be_hidden()
    page.click("#camera-toggle")
    expect(page.locator("#camera-state")).to_have_text("on")
    expect(page.locator("#camera-toggle")).to_have_text("Turn off")
    # An MJPEG <img> counts as loaded after its first frame.
    wait_for_live_picture(page)
    assert page.locator("#live").evaluate("img => img.naturalWidth") == 640
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
    expect(page.locator("#live")).to_be_hidden()
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
    box = page.locator("#live").bounding_box()
    assert box is not None
    corners = [(0.1, 0.1), (0.6, 0.1), (0.6, 0.8), (0.1, 0.8)]
    for x, y in corners:
        page.mouse.click(box["x"] + x * box["width"], box["y"] + y * box["height"])
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
    expect(page.locator("#motion-enabled")).to_be_checked()
    body = requests.get(app.url + "/api/motion", timeout=5).json()
    assert body["sensitivity"] == "low" and body["enabled"] is True
