"""Rooms in a Jupyter server: each bound to a file under the server's root."""
