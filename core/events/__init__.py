"""The events exchange: publish, forward and subscribe, with containerd's filters."""
