"""The watch command keeps the memory it frees: a large block allocated and freed (as a gait forward's activations
are) leaves the RSS where it was at its peak, where a plain process hands it back to the system."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

CHILD = """
import sys
import numpy as np
from allinone.commands.watch import hold_freed_memory
def rss():
    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) / 1024
if sys.argv[1] == 'hold':
    assert hold_freed_memory()
before = rss()
for _ in range(3):
    a = np.ones((64, 1024, 1024), np.uint8)  # 64 MiB touched, then freed
    peak = rss()
    del a
print(round(peak - before), round(rss() - before))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_hold_freed_memory_keeps_a_freed_block_resident():
    def run(mode: str) -> tuple[int, int]:
        out = subprocess.run([sys.executable, "-c", CHILD, mode], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
        return int(out[0]), int(out[1])
    peak, after = run("plain")
    assert peak >= 60 and after < 10  # glibc handed the block back
    peak, after = run("hold")
    assert peak >= 60 and after >= 60  # kept for the next one: no swing
