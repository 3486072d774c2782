"""Resource profiling: wall time, peak memory and CPU use of a process and its children.

:class:`ResourceSampler` samples, every ``interval`` seconds (0.1 s, the FLARE protocol), the
resident memory summed over this process and all its descendants (worker processes included)
and their CPU utilisation, read from ``/proc``; on CUDA it also records torch's peak GPU memory.
It reports the peaks and the areas under the memory-time and CPU-utilisation-time curves
(the FLARE efficiency measures). Linux only for the process-tree RSS; elsewhere it falls back to
this process's own peak RSS.
"""
from __future__ import annotations

import os
import resource
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _children(pid: int) -> list[int]:
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return out
    for k in kids:
        out.append(k)
        out.extend(_children(k))
    return out


def _rss_and_cpu(pid: int) -> tuple[int, int]:
    """(resident bytes, user+system clock ticks) of one process, 0s if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss = int(f.read().split()[1]) * _PAGE
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        ticks = int(parts[11]) + int(parts[12])
        return rss, ticks
    except (OSError, IndexError, ValueError):
        return 0, 0


class ResourceSampler:
    """``with ResourceSampler() as s: ...`` then ``s.result()``: wall_s, peak_rss_mb (process tree),
    rss_auc_mb_s, cpu_util_auc (CPU-utilisation x seconds, 1.0 = one full core), mean_cpu_util,
    and on CUDA peak_gpu_mb."""

    def __init__(self, interval: float = 0.1, pid: int | None = None):
        self.interval = interval
        self.pid = pid or os.getpid()
        self.samples: list[tuple[float, float, float]] = []  # (t, rss bytes, cpu cores busy)
        self._stop = threading.Event()
        self._ticks: dict[int, int] = {}
        self._gone_ticks = 0

    def _sample(self):
        pids = [self.pid] + _children(self.pid)
        rss = 0
        ticks = 0
        now = {}
        for p in pids:
            r, t = _rss_and_cpu(p)
            rss += r
            now[p] = t
        # processes that ended keep their last tick count, so CPU time never goes backwards
        for p, t in self._ticks.items():
            if p not in now:
                self._gone_ticks += t
        self._ticks = now
        ticks = sum(now.values()) + self._gone_ticks
        return rss, ticks

    def _run(self):
        last_t, last_ticks = time.perf_counter(), self._sample()[1]
        self._t_first = last_t
        while True:  # one more sample when stopped, so a run shorter than the interval is measured too
            stopped = self._stop.wait(self.interval)
            rss, ticks = self._sample()
            t = time.perf_counter()
            cpu = (ticks - last_ticks) / _HZ / max(t - last_t, 1e-9)
            self.samples.append((t, rss, max(cpu, 0.0)))
            last_t, last_ticks = t, ticks
            if stopped:
                break

    def __enter__(self):
        self.t0 = time.perf_counter()
        try:

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        except Exception:  # torch absent or no CUDA: nothing to reset
            pass
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.t1 = time.perf_counter()
        return False

    def result(self) -> dict:
        wall = self.t1 - self.t0
        s = self.samples
        own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak = max([x[1] for x in s], default=0) / 2 ** 20
        out = {"wall_s": wall, "peak_rss_mb": max(peak, 0.0) or own_peak}
        if s:  # each sample stands for the interval since the previous one (the first: since the start)
            ts = [self._t_first] + [x[0] for x in s]
            rss_auc = sum((ts[i + 1] - ts[i]) * x[1] for i, x in enumerate(s)) / 2 ** 20
            cpu_auc = sum((ts[i + 1] - ts[i]) * x[2] for i, x in enumerate(s))
            out.update(rss_auc_mb_s=rss_auc, cpu_util_auc=cpu_auc, mean_cpu_util=cpu_auc / max(ts[-1] - ts[0], 1e-9))
        try:

            if torch.cuda.is_available():
                out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        except Exception:
            pass
        return out


def conv_throughput(device: str = "cpu", repeats: int = 3) -> float:
    """GFLOP/s of this machine on a fixed 3D-convolution training step (1 x 16 x 32 x 64 x 64 input,
    16 -> 32 channels, 3x3x3, forward and backward, float32): a speed index that puts rows measured
    on different days side by side (this 2-core machine has run the same training 2x slower on one
    day than on another). Median of ``repeats`` after one warm-up; about 2 s on 2 CPU cores."""

    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 32, 64, 64, generator=g).to(dev).requires_grad_()
    conv = torch.nn.Conv3d(16, 32, 3, padding=1).to(dev)
    flops = 3 * 2 * x.shape[0] * 32 * x[0, 0].numel() * 16 * 27  # forward + backward (2x forward)
    times = []
    for i in range(repeats + 1):
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t = time.perf_counter()
        conv(x).sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        if i:
            times.append(time.perf_counter() - t)
    return flops / sorted(times)[len(times) // 2] / 1e9
