"""The web side: the HTTP server, the page, the MJPEG stream writer, the live feed and the login.

Blueprints only talk to the parts handed to ``create_app`` (``Services``); the server hands each
live stream's socket to the one ``StreamFanout`` thread, and ``LiveFeed`` pushes news to open pages.
"""
