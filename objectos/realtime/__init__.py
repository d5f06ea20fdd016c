"""Realtime engines of the hub: collaborative documents (``yjs``), record events and presence.

Pure library code: no Ray here. Ray actors in ``actors/`` wrap these engines, and the
Socket.IO gateway in ``deployments/`` plugs their protocol handlers into its server.
"""
