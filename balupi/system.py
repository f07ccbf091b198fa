"""Health of the Pi itself: CPU (sampled in the background), temperature, memory, disk, uptime."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil

THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")


class SystemSampler:
    """Keeps a recent CPU percentage so requests never block on psutil's sampling interval."""

    def __init__(self, disk_path: Path):
        self.disk_path = disk_path
        self.cpu_percent: float = 0.0
        psutil.cpu_percent(interval=None)  # prime the counter; the first call always returns 0.0

    def sample(self) -> None:
        """Scheduled every few seconds: CPU use since the previous sample."""
        self.cpu_percent = psutil.cpu_percent(interval=None)

    def status(self) -> dict:
        mem = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.disk_path))
        return {
            "cpu_percent": round(self.cpu_percent, 1),
            "cpu_temp_celsius": cpu_temp_celsius(),
            "memory_total_mb": round(mem.total / 2**20, 1),
            "memory_used_mb": round((mem.total - mem.available) / 2**20, 1),
            "memory_percent": round(mem.percent, 1),
            "disk_total_gb": round(disk.total / 1e9, 2),
            "disk_used_gb": round(disk.used / 1e9, 2),
            "disk_percent": round(disk.percent, 1),
            "uptime_seconds": int(time.time() - psutil.boot_time()),
            "load_avg": [round(x, 2) for x in os.getloadavg()],
            "process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1),
        }


def cpu_temp_celsius() -> float | None:
    try:
        return round(int(THERMAL_ZONE.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None
