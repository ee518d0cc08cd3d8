"""``python -m appliance``: parse flags, load the config, run until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sdnotify import SystemdNotifier

from appliance import __version__
from appliance.config import AppConfig, ConfigError, load_config, redact

if TYPE_CHECKING:
    from appliance.camera_backends.base import CameraBackend

log = logging.getLogger("appliance")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m appliance", description="Raspberry Pi camera appliance",
                                     epilog="python -m appliance hash-password: print a hash for server.auth")
    parser.add_argument("--config", metavar="FILE",
                        help="YAML config file, - for standard input (env: APPLIANCE_CONFIG)")
    parser.add_argument("--camera", choices=["auto", "synthetic", "opencv", "picamera2"],
                        help="camera backend (default: auto)")
    parser.add_argument("--device", help="opencv: index, /dev/videoN, file or URL; picamera2: camera number")
    parser.add_argument("--size", metavar="WxH", help="frame size, e.g. 1280x720")
    parser.add_argument("--fps", type=float, help="frames per second")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    parser.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    parser.add_argument("--version", action="version", version=f"appliance {__version__}")
    return parser.parse_args(argv)


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Turn the flags that were given into a config tree that beats file and environment."""
    camera = {key: value for key, value in (("backend", args.camera), ("device", args.device),
                                            ("size", args.size), ("fps", args.fps)) if value is not None}
    server = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    return {key: value for key, value in (("camera", camera), ("server", server)) if value}


def configure(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, AppConfig]:
    args = parse_args(argv)
    path = args.config or os.environ.get("APPLIANCE_CONFIG")
    return args, load_config(path, overrides=flag_overrides(args))


def hash_password_command(argv: Sequence[str]) -> int:
    """``python -m appliance hash-password``: read a password (twice on a terminal), print its hash."""
    import getpass

    from appliance.passwords import hash_password

    parser = argparse.ArgumentParser(prog="python -m appliance hash-password",
                                     description="print a hash for server.auth.password_hash")
    parser.parse_args(argv)
    if sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("appliance: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("appliance: an empty password is not a password", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def detect_camera_command(argv: Sequence[str]) -> int:
    """``python -m appliance detect-camera``: print the camera ``auto`` would use; status 1 when none."""
    from appliance.camera_backends import detect_camera
    from appliance.config import CameraSettings

    argparse.ArgumentParser(prog="python -m appliance detect-camera",
                            description="print the real camera that camera.backend: auto would use").parse_args(argv)
    found = detect_camera(CameraSettings())
    print(found or "none")
    return 0 if found else 1


def main(argv: Sequence[str] | None = None, backend: CameraBackend | None = None) -> int:
    """Run until SIGTERM or Ctrl-C; ``backend`` replaces the configured camera (fault tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hash-password"]:
        return hash_password_command(argv[1:])
    if argv[:1] == ["detect-camera"]:
        return detect_camera_command(argv[1:])
    if argv[:1] == ["install-model"]:
        from appliance.detection.install import main as install_model

        return install_model(argv[1:])
    try:
        args, config = configure(argv)
    except ConfigError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print("configuration is valid")
        print(json.dumps(redact(config.model_dump(mode="json")), indent=2))
        return 0
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    # SIGTERM and SIGINT are blocked before any thread exists, so every thread inherits the block and
    # the kernel keeps the signal pending until the main thread takes it with sigtimedwait below. A
    # Python handler runs only when the kernel happens to deliver the signal to the main thread; sent
    # to any of the others, the main thread slept on in its wait and SIGTERM went unanswered.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        return _serve(config, backend, stop_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stop_signals)


def _serve(config: AppConfig, backend: Any, stop_signals: set[signal.Signals]) -> int:
    """Run the appliance until SIGTERM or SIGINT (blocked by the caller), feeding systemd's watchdog."""
    from appliance.runtime import Appliance  # heavy imports (OpenCV) only when really running

    try:
        appliance = Appliance(config, backend=backend)
        appliance.start()
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return 2  # systemd does not restart on 2: the configuration must be fixed first
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 1
    systemd = SystemdNotifier()
    systemd.notify(f"READY=1\nSTATUS=serving on port {appliance.server.port}")
    interval = watchdog_interval(os.environ)
    try:
        # The watchdog is pinged only while the capture loop is healthy and the web server answers a
        # request on loopback, so systemd restarts a hung loop or a wedged server.
        while True:
            received = (signal.sigtimedwait(stop_signals, interval) if interval
                        else signal.sigwait(stop_signals))
            if received is not None:
                number = received if isinstance(received, int) else received.si_signo
                log.info("received %s, shutting down", signal.Signals(number).name)
                break
            healthy, reason = appliance.health()
            if healthy:
                systemd.notify("WATCHDOG=1")
            else:
                log.warning("unhealthy (%s); not pinging the systemd watchdog", reason)
    finally:
        systemd.notify("STOPPING=1")
        appliance.stop()
    log.info("stopped")
    return 0


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of systemd's WatchdogSec for this process, or None when no watchdog is set."""
    usec = environ.get("WATCHDOG_USEC")
    pid = environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


def run() -> None:
    """The ``appliance`` console script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
