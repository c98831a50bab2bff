"""Memory of a benchmarked server: RSS of its process tree, sampled, and its kernel-kept high-water mark."""
from __future__ import annotations

import threading
import time
from pathlib import Path


def process_tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            pending.extend(int(child) for child in children.read_text().split())
    return found


def memory_kib(pid: int, field: str) -> int:
    """Sum of a /proc status field (VmHWM: peak RSS, VmRSS: current) over the process and its children; 0 once
    it is gone."""
    total = 0
    for member in process_tree(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class PeakSampler:
    """Samples the summed RSS of a process tree (children come and go; VmHWM alone would miss them) until
    stopped or until the process is gone (then the last sample before its exit stands)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            # VmHWM: the kernel's own peak of the root process, which catches what falls between two samples.
            self.peak = max(self.peak, memory_kib(self.pid, "VmRSS"), memory_kib(self.pid, "VmHWM"))
            time.sleep(0.1)

    def stop_sampling(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def memory_line(idle_kib: int, peak_kib: int) -> str:
    return f"idle RSS {idle_kib / 1024:.1f} MiB, peak RSS {peak_kib / 1024:.1f} MiB"
