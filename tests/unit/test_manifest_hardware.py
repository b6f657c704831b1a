"""The manifest's hardware summary does not import torch on a machine without an NVIDIA driver."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.backends._common import nvidia_driver_present


def test_hardware_summary_leaves_torch_unimported_without_a_gpu_driver() -> None:
    if nvidia_driver_present():
        pytest.skip("an NVIDIA driver is present: the summary imports torch to name the GPUs")
    code = (
        "import sys; from harness.manifest import _hardware; info = _hardware(); "
        "print('torch' in sys.modules, info['cpus'] is not None, 'gpus' in info)"
    )
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "False"]
