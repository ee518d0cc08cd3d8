"""The device's front panel: a GPIO button that toggles the camera and an LED that shows its state.

``button`` is the pure logic (debounce, long press), tested with injected clocks; ``gpio`` binds it to
gpiozero's devices, which run on a Pi's pins or on gpiozero's mock pins in the tests.
"""
