"""This process's own peak resident memory. resource's ru_maxrss is not it in a child process:
Linux folds the parent's peak into it at exec, so a child started from a 3 GB test runner
reports at least 3 GB. /proc's VmHWM belongs to the process's own address space."""
from __future__ import annotations

import resource


def peak_rss_bytes() -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # no /proc (macOS: bytes there; rare)
