"""Giving the C heap's free pages back to the kernel once the engine is up.

Starting the engine imports some five hundred modules; reading their code and
building their classes leaves freed blocks in glibc's heap that it keeps for
reuse rather than return (about 1 MiB of the idle engine's RSS). `trim` asks
glibc for `malloc_trim(0)` once the engine serves; on a C library without it
(musl) it does nothing.
"""

from __future__ import annotations

import contextlib


def trim() -> None:
    # ctypes only here: the one call is all the engine needs of it.
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
