"""The wires that ship with jupyter_rooms: memory, file and websocket."""
