"""keep_freed_memory: freed big blocks stay in the process (no page faults on reuse) on glibc,
does nothing elsewhere, and the command line applies it."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mtcnnkit import allocator
from mtcnnkit.cli import app

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# with transparent huge pages always on, a fresh 64 MB block faults in 2 MB pages: too few
# faults for the default's count to tell the settings apart
THP_ALWAYS = THP.is_file() and "[always]" in THP.read_text()

# Allocates, touches and frees a 64 MB block 20 times; prints the minor page faults of the
# last 19 rounds (the first one maps the memory whatever the setting).
FAULTS_SCRIPT = """
import resource, sys
import torch
from mtcnnkit.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = torch.ones(16 << 20); del a
start = faults()
for _ in range(19):
    a = torch.ones(16 << 20); del a
print(faults() - start)
"""


def _reuse_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(not GLIBC, reason="the setting applies to glibc's malloc only")
@pytest.mark.skipif(THP_ALWAYS, reason="transparent huge pages 'always': page faults per 2 MB")
def test_freed_block_is_reused_without_page_faults():
    default, kept = _reuse_faults("default"), _reuse_faults("keep")
    block = (64 << 20) // 4096  # pages of one block
    assert default > 10 * block  # glibc default: the rounds map fresh zeroed pages
    assert kept <= 2 * block  # kept: the block comes back from the heap, already mapped


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() is False
    monkeypatch.setattr(allocator.platform, "system", lambda: "Darwin")
    assert allocator.keep_freed_memory() is False


def test_cap_must_be_positive():
    with pytest.raises(ValueError, match="cap_bytes"):
        allocator.keep_freed_memory(0)


def test_command_line_applies_it(monkeypatch):
    calls = []
    monkeypatch.setattr("mtcnnkit.cli.keep_freed_memory", lambda: calls.append(True))
    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0, result.output
    assert calls == [True]
