"""Integrations with web frameworks: :mod:`.asgi` (any ASGI app), :mod:`.fastapi` (lifespan)."""
