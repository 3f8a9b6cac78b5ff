"""ctrdeck's engine: a container engine modelled on containerd.

The packages below own one containerd concept each (metadata, content, events,
snapshots, images, runtime); `services/` adapts them to containerd's v1 gRPC API,
`server.py` wires them together and `client.py` is the typed async client that
tests and the console use. Nothing here imports the console (`tui/`).
"""

__version__ = "0.1.0"
