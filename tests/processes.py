"""A node running as its own process: what tests read of it and how they stop it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path


def memory(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory figure (VmRSS, VmHWM), in bytes (psutil is not a dependency)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # "VmHWM:   123456 kB"
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as an operator stops a node; killed if it has not ended within 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
