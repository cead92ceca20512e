"""CPU and memory of processes (psutil): a sampler on a thread, the CPU of a process
tree, and how much of the machine a benchmark had."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import psutil


class ProcessSampler:
    """Samples, on a thread, the resident memory of some processes and the CPU time of
    their process trees (PostgreSQL backends included, even short-lived ones).

    `roots()` names the processes to watch (name -> pid), asked at every sample.
    """

    def __init__(self, roots: Callable[[], dict[str, int]], interval_s: float = 0.2) -> None:
        self._roots = roots
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.peak_rss: dict[str, int] = {}
        self.peak_rss_total: dict[str, int] = {}  # by name prefix, e.g. "worker"
        self._cpu_start: dict[int, float] = {}
        self._cpu_last: dict[tuple[str, int], float] = {}
        self.samples = 0

    def __enter__(self) -> ProcessSampler:
        for name, pid in self._roots().items():
            for proc, cpu in tree_cpu(pid):
                self._cpu_start[proc] = cpu
                self._cpu_last[(name, proc)] = cpu
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def _sample(self) -> None:
        totals: dict[str, int] = {}
        for name, pid in self._roots().items():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                rss = 0
            self.peak_rss[name] = max(self.peak_rss.get(name, 0), rss)
            group = name.split("-", 1)[0]
            totals[group] = totals.get(group, 0) + rss
            for proc, cpu in tree_cpu(pid):
                self._cpu_last[(name, proc)] = cpu
        for group, total in totals.items():
            self.peak_rss_total[group] = max(self.peak_rss_total.get(group, 0), total)
        self.samples += 1

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used by each named tree while sampled (processes that exited
        between two samples lose their last interval)."""
        used: dict[str, float] = {}
        for (name, proc), cpu in self._cpu_last.items():
            used[name] = used.get(name, 0.0) + cpu - self._cpu_start.get(proc, 0.0)
        return {name: round(value, 1) for name, value in used.items()}

    def peak_mib(self, name: str) -> float:
        return round(self.peak_rss.get(name, 0) / 2**20, 1)

    def peak_total_mib(self, group: str) -> float:
        return round(self.peak_rss_total.get(group, 0) / 2**20, 1)


def tree_cpu(pid: int, *, reaped: bool = False) -> list[tuple[int, float]]:
    """(pid, user + system CPU seconds) of a process and of each of its descendants;
    with `reaped`, each one's count includes its children that have exited and were
    waited for (`children_user`, `children_system`)."""
    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for proc in family:
        try:  # a PostgreSQL backend may exit between the listing and this read
            times = proc.cpu_times()
        except psutil.Error:
            continue
        seconds = times.user + times.system
        if reaped:
            seconds += times.children_user + times.children_system
        found.append((proc.pid, seconds))
    return found


def busy_core_seconds() -> float:
    """CPU seconds the whole machine has been busy (every core, iowait not counted)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def contention(wall_s: float, busy_s: float, own: ProcessSampler) -> dict[str, Any]:
    """How much of the machine this benchmark had: CPU used by everything during the
    measurement, and by this benchmark's own processes (bench, stack, children)."""
    cores = os.cpu_count() or 1
    ours = sum(own.cpu_seconds().values())
    return {
        "wall_s": round(wall_s, 1),
        "cores": cores,
        "machine_busy_core_s": round(busy_s, 1),
        "this_benchmark_core_s": round(ours, 1),
        "other_work_core_s": round(max(0.0, busy_s - ours), 1),
        "other_work_share_of_machine": round(max(0.0, busy_s - ours) / (wall_s * cores), 2),
    }
