#!/usr/bin/env python3
"""Measured device-memory bandwidth of the GPU (a 4 GiB device-to-device copy, bytes read plus written, median of
20 after warm-up, timed with CUDA events): the ceiling for a decode step that must read every weight once."""

import json
import statistics

import torch

n = 4 << 30
src = torch.randn(n // 4, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
times = []
for _ in range(20):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    dst.copy_(src)
    end.record()
    torch.cuda.synchronize()
    times.append(start.elapsed_time(end) / 1e3)
median = statistics.median(times)
print(json.dumps({"copy_gib": 4, "median_s": median, "bandwidth_gb_s": 2 * n / median / 1e9,
                  "device": torch.cuda.get_device_name()}))
