"""A verl platform for CPU-only machines (verl 0.9.1 knows only nvidia/huawei/amd; issue #3266).

Selected only by ``VERL_PLATFORM=cpu`` (verl's own override): auto-detection never picks it, so a GPU
run is unchanged. Devices are the host's CPU, collectives use gloo, and every CUDA-specific call
(memory stats, streams, profiler ranges) is a no-op.

Ray still schedules workers on a "GPU" resource: the trainer's resource pools are written in GPUs,
so CPU runs declare logical GPUs to Ray (``+ray_kwargs.ray_init.num_gpus=N``); nothing touches a
real device.
"""

from contextlib import contextmanager, nullcontext
from types import ModuleType, SimpleNamespace
from typing import Any, Optional

import torch

from verl.plugin.platform import PlatformBase

PLATFORM_NAME = "cpu"


def _cpu_device_module() -> SimpleNamespace:
    """The ``torch.cuda`` functions verl 0.9.1 calls through ``get_torch_device()``, for the CPU.

    Streams come from ``torch.cpu``; memory accounting reports zeros (verl logs it, nothing
    depends on it); cache, seeding per device and profiler calls are no-ops.
    """
    cpu = torch.cpu

    def zero(*_args, **_kwargs) -> int:
        return 0

    def nothing(*_args, **_kwargs) -> None:
        return None

    return SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        current_device=cpu.current_device,
        set_device=nothing,
        synchronize=nothing,
        empty_cache=nothing,
        ipc_collect=nothing,
        set_per_process_memory_fraction=nothing,
        reset_peak_memory_stats=nothing,
        reset_accumulated_memory_stats=nothing,
        memory_allocated=zero,
        max_memory_allocated=zero,
        memory_reserved=zero,
        max_memory_reserved=zero,
        mem_get_info=lambda *_a, **_k: (0, 0),
        get_rng_state=torch.get_rng_state,
        set_rng_state=torch.set_rng_state,
        current_stream=cpu.current_stream,
        stream=cpu.stream,
        Stream=cpu.Stream,
        Event=lambda *_a, **_k: SimpleNamespace(record=nothing, synchronize=nothing, wait=nothing),
        get_device_name=lambda *_a, **_k: "cpu",
        get_device_properties=lambda *_a, **_k: SimpleNamespace(name="cpu", total_memory=0),
    )


class PlatformCPU(PlatformBase):
    """The host CPU as verl's accelerator: gloo collectives, no device memory to manage."""

    def __init__(self):
        self._device_module = _cpu_device_module()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> ModuleType:
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check=False) -> bool:
        # Never auto-detected: only an explicit VERL_PLATFORM=cpu selects this platform.
        return False

    def current_device(self) -> str:
        # verl moves tensors with `.to(get_device_id())`; an int would mean an accelerator index.
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        with nullcontext():
            yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> Any:
        return None
