"""Test-only: lets the real picamera2 open libcamera's software ``virtual`` camera.

A Pi's camera offers the ``Raw`` stream role (the sensor's own Bayer output), and picamera2 asks for
it while it opens a camera, to list the sensor's modes. The virtual camera is no sensor and refuses
that role, so ``Picamera2(0)`` would fail before the appliance ever configured it. Where the camera
answers ``Raw`` with nothing, this asks again with ``Viewfinder`` in its place: the modes picamera2
then lists are the virtual camera's own sizes. Nothing changes for a camera that has the role.

Loaded from PYTHONPATH in the test root only (tests/camera_stack.py); never installed with the
appliance.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

try:
    import libcamera
except ImportError:  # not the camera test root: nothing to do
    libcamera = None

if libcamera is not None:
    _generate = libcamera.Camera.generate_configuration

    def _generate_without_raw(camera, roles):  # type: ignore[no-untyped-def]
        config = _generate(camera, roles)
        if config is None and libcamera.StreamRole.Raw in list(roles):
            config = _generate(camera, [libcamera.StreamRole.Viewfinder if role == libcamera.StreamRole.Raw
                                        else role for role in roles])
        return config

    libcamera.Camera.generate_configuration = _generate_without_raw


# Buffers from libcamera itself. picamera2 allocates its own from a dma-heap, one plane per buffer,
# which a Pi's pipeline takes; the virtual camera writes an NV12 frame's two planes separately and
# needs buffers that have them, which libcamera's own allocator makes. So the test root uses that
# allocator (picamera2's LibcameraAllocator), set right after the camera is opened.
class _UseLibcameraBuffers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != "picamera2.picamera2":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):  # type: ignore[no-untyped-def]
            run(module)
            from picamera2.allocators import LibcameraAllocator

            opened = module.Picamera2.__init__

            def __init__(self, camera_num=0, *args, allocator=None, **kwargs):  # type: ignore[no-untyped-def]
                opened(self, camera_num, *args, allocator=allocator, **kwargs)
                if allocator is None:
                    self.allocator = LibcameraAllocator(self.camera)

            module.Picamera2.__init__ = __init__

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if libcamera is not None:
    sys.meta_path.insert(0, _UseLibcameraBuffers())
