"""gRPC services: one thin module per containerd v1 service.

Each module turns request messages into calls on the concept it serves, publishes
the event containerd publishes, and turns results back into messages. Typed
errors cross into gRPC status codes only in `status.py`.
"""
