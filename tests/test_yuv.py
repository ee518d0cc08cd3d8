"""The I420 picture (appliance/camera_backends/yuv.py): read out of every 4:2:0 layout a camera gives,
in either range, and worked on as the BGR path works on its images, with the same pictures as a result.

Scenes are real footage (CDnet's highway, where present) or a textured test scene; the BGR path's own
functions make the reference each time, and "the same picture" is measured as the mean difference
of the two results made BGR (the chroma's half resolution alone costs about one level).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.camera_backends.yuv import (
    I420,
    fill_polygons,
    from_bgr,
    from_buffer,
    grey,
    oriented,
    scaled_copy,
    size_of,
)
from appliance.capture.encoder import planes_encoder
from appliance.capture.overlay import draw_overlay
from appliance.capture.picture import orient
from appliance.config import OverlaySettings, Zone
from appliance.motion.events import Box, MotionResult
from tests.helpers import HIGHWAY


def scene(size: tuple[int, int] = (640, 360)) -> np.ndarray:
    """A frame of real traffic where the dataset is present, else a textured wall with colour in it."""
    frame = HIGHWAY / "in000900.jpg"
    if frame.exists():
        return cv2.resize(cv2.imread(str(frame)), size, interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(3)
    coarse = rng.integers(0, 256, (size[1] // 20, size[0] // 20, 3), dtype=np.uint8)
    return cv2.resize(coarse, size, interpolation=cv2.INTER_CUBIC)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def camera_buffer(picture: I420, fmt: str, stride: int, limited: bool) -> np.ndarray:
    """``picture`` laid out as a camera's buffer of ``fmt``, rows padded to ``stride`` with garbage."""
    width, height = picture.size
    y, u, v = picture.planes()
    if limited:  # as a camera configured for video range would give it
        y = np.round(y.astype(float) * 219 / 255 + 16).astype(np.uint8)
        u, v = (np.round((plane.astype(float) - 128) * 224 / 255 + 128).astype(np.uint8) for plane in (u, v))
    buffer = np.full(height * 3 // 2 * stride, 77, np.uint8)
    buffer[:height * stride].reshape(height, stride)[:, :width] = y
    chroma = buffer[height * stride:]
    if fmt in ("NV12", "NV21"):
        pairs = chroma.reshape(height // 2, stride)[:, :width].reshape(height // 2, width // 2, 2)
        pairs[..., 0], pairs[..., 1] = (u, v) if fmt == "NV12" else (v, u)
    else:
        quarter = height // 2 * stride // 2
        first, second = (u, v) if fmt == "YUV420" else (v, u)
        chroma[:quarter].reshape(height // 2, stride // 2)[:, :width // 2] = first
        chroma[quarter:quarter * 2].reshape(height // 2, stride // 2)[:, :width // 2] = second
    return buffer


@pytest.mark.parametrize("fmt", ["YUV420", "YVU420", "NV12", "NV21"])
@pytest.mark.parametrize("limited", [False, True], ids=["full", "limited"])
def test_every_layout_and_range_a_camera_gives_reads_into_the_same_picture(fmt: str, limited: bool) -> None:
    picture = from_bgr(scene())
    buffer = camera_buffer(picture, fmt, stride=704, limited=limited)  # rows padded to 64 px, as on a Pi
    read = from_buffer(buffer, fmt, picture.size, 704, full_range=not limited)
    assert read.size == picture.size
    # Limited range has 219 levels of Y and 225 of chroma for full range's 256: a level or two lost.
    assert np.abs(read.data.astype(int) - picture.data).max() <= (2 if limited else 0)
    again = from_buffer(buffer, fmt, picture.size, 704, full_range=not limited, into=read)
    assert again is read  # one picture reused frame after frame
    with pytest.raises(ValueError, match="even width and height"):
        from_buffer(buffer, fmt, (639, 360), 704, True)


def test_the_picture_as_bgr_and_as_h264_takes_it_matches_opencvs_own_conversions() -> None:
    image = scene()
    picture = from_bgr(image)
    assert difference(picture.bgr(), image) < 1.5
    # H.264's input is limited range: what OpenCV's BGR to I420 (limited, BT.601) makes of the image.
    assert difference(picture.video(), cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)) < 1.5


@pytest.mark.parametrize(("rotation", "hflip", "vflip"), [(90, False, False), (180, False, False),
                                                          (270, True, False), (0, False, True)])
def test_orientation_turns_the_planes_as_the_bgr_image(rotation: int, hflip: bool, vflip: bool) -> None:
    image = scene()
    turned = oriented(from_bgr(image), rotation, hflip, vflip)
    expected = orient(image, rotation, hflip, vflip)
    assert size_of(turned) == size_of(expected)
    assert difference(turned.bgr(), expected) < 1.5


def test_masks_and_night_grey_on_the_planes_are_black_and_grey() -> None:
    image = scene()
    picture = from_bgr(image)
    polygon = np.array([(101, 51), (300, 51), (300, 211), (101, 211)], np.int32)  # odd corners: half pixels
    fill_polygons(picture, [polygon], (0, 0, 0))
    assert picture.y[51:212, 101:301].max() == 0  # to the last pixel of the outline
    assert (picture.u[26:105, 51:150] == 128).all() and (picture.v[26:105, 51:150] == 128).all()
    made = picture.bgr()
    assert made[54:209, 104:298].max() <= 1  # black, chroma included
    assert difference(made[:40], image[:40]) < 1.5  # and nothing outside it changed
    grey(picture)
    made = picture.bgr().astype(int)
    assert np.abs(made[..., 0] - made[..., 2]).max() <= 1 and np.abs(made[..., 1] - made[..., 2]).max() <= 1


def test_the_overlay_on_the_planes_looks_as_on_bgr() -> None:
    """Compared as a viewer sees them, JPEG (which keeps colour at half resolution either way)."""
    image = scene((1280, 720))
    settings = OverlaySettings(timestamp=True, motion_boxes=True, zones=True)
    motion = MotionResult(motion=True, area=0.1, score=0.5, boxes=(Box(200, 300, 180, 120),))
    zones = (Zone(name="drive", mode="include", points=((0.1, 0.5), (0.9, 0.5), (0.9, 0.95), (0.1, 0.95))),)
    drawn = image.copy()
    draw_overlay(drawn, 1_000_000_000.0, motion, settings, zones=zones)
    picture = from_bgr(image)
    draw_overlay(picture, 1_000_000_000.0, motion, settings, zones=zones)
    from_planes, from_bgr_image = jpeg_of(picture), jpeg_of(drawn)
    unchanged = difference(jpeg_of(from_bgr(image)), jpeg_of(image))  # the two encoders, nothing drawn
    assert difference(from_planes, from_bgr_image) < unchanged + 0.8
    # Where something was drawn (the text, the box, the zone), the planes carry it too: thin lines
    # differ at their edges, where each path averages the colour over 2x2 pixels its own way.
    changed = np.any(drawn != image, axis=2)
    assert changed.sum() > 5000
    assert difference(from_planes[changed], from_bgr_image[changed]) < 15
    box = from_planes[300:302, 260:300].astype(int)  # the red box's top edge: red in the planes as in BGR
    assert (box[..., 2] > 170).all() and (box[..., 1] < 90).all(), box


def jpeg_of(image: np.ndarray | I420) -> np.ndarray:
    """The picture as a viewer gets it: a JPEG at quality 90 (from the planes, or by OpenCV from BGR), decoded."""
    if isinstance(image, I420):
        data = planes_encoder("auto", 90, lambda bgr: b"")(image)
    else:
        data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_a_jpeg_from_the_planes_is_the_jpeg_from_bgr() -> None:
    image = scene((1280, 720))
    encode = planes_encoder("auto", 80, lambda bgr: cv2.imencode(".jpg", bgr)[1].tobytes())
    jpeg = encode(from_bgr(image))
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    from_bgr_jpeg = cv2.imdecode(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    assert difference(decoded, from_bgr_jpeg) < 2.0
    # OpenCV's encoder asked for by name: the planes are made BGR for it.
    by_opencv = planes_encoder("opencv", 80, lambda bgr: cv2.imencode(".jpg", bgr)[1].tobytes())
    assert cv2.imdecode(np.frombuffer(by_opencv(from_bgr(image)), np.uint8), cv2.IMREAD_COLOR).shape == image.shape


def test_a_scaled_copy_of_the_planes_is_even_and_its_own() -> None:
    picture = from_bgr(scene())
    small = scaled_copy(picture, (321, 181))  # an odd size asked for (stream.size): 4:2:0 takes even
    assert isinstance(small, I420) and small.size == (320, 180)
    same = scaled_copy(picture, picture.size)
    assert isinstance(same, I420) and same.data is not picture.data and np.array_equal(same.data, picture.data)
