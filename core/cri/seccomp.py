"""ctrdeck's default seccomp profile (CRI `RuntimeDefault`).

A deny list, not containerd's allow list: every system call is allowed except
those that act on the whole machine or the kernel (loading modules, kexec,
reboot, swap, the clock, accounting, keyrings, BPF, perf, and handles that
reach past a container's root). They fail with EPERM, as Docker's profile makes
them fail. Privileged containers and `Unconfined` get no profile.
"""

from __future__ import annotations

from typing import Any

DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "get_kernel_syms", "init_module", "ioperm", "iopl",
    "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "move_pages", "nfsservctl",
    "open_by_handle_at", "perf_event_open", "query_module", "quotactl", "reboot",
    "request_key", "settimeofday", "stime", "swapoff", "swapon", "sysfs", "_sysctl",
    "uselib", "userfaultfd", "vm86", "vm86old",
)  # fmt: skip

EPERM = 1


def default_profile() -> dict[str, Any]:
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
        ],
    }
