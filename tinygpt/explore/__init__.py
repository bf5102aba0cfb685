"""The local web explorer (``tinygpt explore``): see server.py for the JSON API."""
from .server import Explorer, make_server, serve

__all__ = ["Explorer", "make_server", "serve"]
