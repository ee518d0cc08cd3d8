"""Object detection: what moved, a person, a car or a cat, told apart on the Pi's own CPU.

``model`` loads an SSD TFLite model (Google Coral's SSD-MobileNet-V2 COCO by default) on ai-edge-litert;
``objects`` turns its detections into tracked objects and decides which of them alert; ``worker`` runs
both on their own thread, fed by the capture thread only while motion is seen; ``install`` fetches the
pinned model once, with its hash checked. Nothing here is imported unless ``detection.enabled``.
"""
