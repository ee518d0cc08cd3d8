"""Motion: the detector that looks at each analysed frame, the tracker that turns its results into
events, and the run-time settings (on/off, sensitivity, zones) a user changes while it runs.

``events`` is pure (no OpenCV, no thread): the controller, the listeners and the tests import it
without the image stack.
"""
