"""securemsg: an end-to-end encrypted WebSocket relay for therapy platforms.

The server stores and forwards ciphertext only; every sanctioned access is written to a
tamper-evident audit log. See docs/architecture.md for the layers.
"""

__version__ = "0.1.0"
