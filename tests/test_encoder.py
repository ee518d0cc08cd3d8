"""The JPEG encoder: the fastest installed one, timed at start-up; a missing one chosen by name is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.capture import encoder
from appliance.capture.encoder import EncodeError, choose_encoder, sample_frame
from tests.helpers import decode_jpeg


@pytest.mark.parametrize("name", ["opencv", "simplejpeg"])
def test_each_encoder_turns_bgr_into_a_jpeg_of_the_same_picture(name: str) -> None:
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :160, 0] = 255  # blue on the left, in BGR order
    frame[:, 160:, 2] = 255  # red on the right
    chosen, encode = choose_encoder(name, quality=90, size=(320, 240))
    decoded = decode_jpeg(encode(frame))
    assert chosen == name and decoded.shape == frame.shape
    blue, red = decoded[120, 40], decoded[120, 280]
    assert blue[0] > 200 and blue[2] < 60 and red[2] > 200 and red[0] < 60  # BGR stayed BGR: no channel swap
    assert len(encode(sample_frame((320, 240)))) > 1000  # and the timing frame encodes too


def test_auto_picks_the_fastest_it_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    timings = {"opencv": 0.002, "simplejpeg": 0.001}
    monkeypatch.setattr(encoder, "_time_per_frame", lambda encode, frame, repeats: timings[encode.__name__])

    def named(label: str) -> object:
        def make(quality: int) -> object:
            def fake(image: object) -> bytes:
                return b""
            fake.__name__ = label
            return fake
        return make

    monkeypatch.setattr(encoder, "ENCODERS", {"opencv": named("opencv"), "simplejpeg": named("simplejpeg")})
    assert choose_encoder("auto", 80, (64, 48))[0] == "simplejpeg"
    timings["opencv"] = 0.0005
    assert choose_encoder("auto", 80, (64, 48))[0] == "opencv"


def test_a_missing_encoder_is_skipped_by_auto_and_an_error_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(quality: int) -> object:
        raise ImportError("No module named 'simplejpeg'")

    monkeypatch.setitem(encoder.ENCODERS, "simplejpeg", not_installed)
    assert choose_encoder("auto", 80, (64, 48))[0] == "opencv"
    with pytest.raises(EncodeError, match="simplejpeg is not installed"):
        choose_encoder("simplejpeg", 80, (64, 48))
