"""Layers and file trees: applying a layer stream to a snapshot, and making one from two trees.

`compression` knows the layer media types and opens their streams, `apply` unpacks a
tar with OCI whiteout semantics and refuses anything that would write outside its
target, `walk` turns the difference between two trees into a layer, and `differ` is
containerd's walking differ put together from them (and the snapshots package's
mounts) for the Diff service and the pull pipeline.
"""
