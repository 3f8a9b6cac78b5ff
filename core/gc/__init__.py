"""Garbage collection, in one room: the mark, the pins, and the collector that schedules both.

`mark.py` finds what is unreachable from containerd's roots and sweeps those
records; `pins.py` keeps the blobs claimed outside the metadata (pins, commits in
flight) from the file sweep; `collector.py` (`GarbageCollector`) decides when a
pass runs and runs it without stalling the event loop. The engine builds one
`GarbageCollector` and hands it to whatever deletes or commits content.
"""

from core.gc.collector import GarbageCollector
from core.gc.mark import Marker, Plan, Result
from core.gc.pins import BlobPins

__all__ = ["BlobPins", "GarbageCollector", "Marker", "Plan", "Result"]
