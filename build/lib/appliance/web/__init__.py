"""HTTP layer: Blueprints that only talk to the parts handed to ``create_app``."""
