"""Peak-memory estimates of the heavy steps, checked against what the machine has before the step starts, so a
run that cannot fit ends in one `error:` line naming what it needs, what there is and the fix, instead of the
out-of-memory killer or an abort inside VTK.

The figures are fits of measured peaks (maximum resident set size, `resource.getrusage`) on small synthetic
inputs; docs/reliability.md lists the measurements.
"""

from __future__ import annotations

import os

from reactkd.errors import ReactKDError

GIB = 1024 ** 3

# Peak resident memory of a whole `reactkd classify` process, fitted on synthetic CTs of 3.2, 12.3 and 46.1
# million voxels (0.78 / 0.94 / 1.39 GiB without rendering, 1.09 / 1.34 / 2.29 GiB with it): per CT voxel the
# float32 CT, the mask, the two attention maps on the native grid and their copies while mapped back and
# written; rendering adds VTK's image data, volume-rendering textures and the scene bundle's copies.
CLASSIFY_BYTES_PER_VOXEL = 16
CLASSIFY_FIXED_BYTES = int(0.85 * GIB)  # Python, torch, SimpleITK, the network (0.1 GiB of margin)
RENDER_BYTES_PER_VOXEL = 31
RENDER_FIXED_BYTES = int(1.1 * GIB)  # the above plus VTK, MRML and an off-screen OpenGL context (margin 0.1)


def available_bytes() -> int | None:
    """Memory this process may still use: the kernel's MemAvailable, capped by a cgroup (container) limit; None
    where it cannot be told (no /proc and no psutil): the check is then skipped rather than guessed."""
    available = _meminfo_available()
    limit = _cgroup_room()
    if available is None:
        return limit
    return min(available, limit) if limit is not None else available


def _meminfo_available() -> int | None:
    try:  # Linux, without any package
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:  # macOS, Windows: psutil where installed (Slicer's Python may lack it)
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def _cgroup_room() -> int | None:
    """Bytes left under the cgroup v2 memory limit (Docker's --memory), None without a limit."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as handle:
            limit = handle.read().strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as handle:
            current = int(handle.read().strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - current, 0)


def resident_bytes() -> int:
    """This process's resident memory now (what a later peak already includes); 0 where it cannot be told."""
    try:  # Linux: resident pages of /proc/self/statm
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        return 0


def classify_peak_bytes(voxels: int, render: bool = False) -> int:
    """Estimated peak memory of a classify process for a CT of `voxels` voxels, with or without rendering."""
    if render:
        return RENDER_FIXED_BYTES + RENDER_BYTES_PER_VOXEL * voxels
    return CLASSIFY_FIXED_BYTES + CLASSIFY_BYTES_PER_VOXEL * voxels


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB"


def check_memory(peak: int, what: str, fix: str) -> None:
    """Refuse, in one line, a step whose estimated process peak `peak` would need more than this process
    holds now plus what the machine has available. `REACTKD_MEMORY_CHECK=0` skips the check (for a machine
    whose swap the estimate does not count).

    Example:
        >>> check_memory(1, "a step of one byte", "nothing to fix")
        >>> check_memory(1 << 60, "training", "use a smaller config")
        Traceback (most recent call last):
        reactkd.errors.ReactKDError: training needs about 1073741824.0 GiB of memory, ...
    """
    if os.environ.get("REACTKD_MEMORY_CHECK", "1") == "0":
        return
    held, free = resident_bytes(), available_bytes()
    if free is not None and peak - held > free:
        raise ReactKDError(f"{what} needs about {gib(peak)} of memory, but this machine has {gib(free)} available "
                           f"(beside the {gib(held)} this process holds); {fix} (or set REACTKD_MEMORY_CHECK=0 to "
                           "try anyway)")


# Training: bytes per sample and model-grid voxel of one CPU step (forward, backward, AdamW), fitted on
# 32 x 64 x 64 steps (resource.getrusage, one process per point): SF teacher 4360 (feature_size 12, depths
# 1,1,1,1), 6820 (depths 2,2,2,2), 4925 (feature_size 24, batch 1); dose teacher 2856; student 672
# (init_filters 8) and 1045 (16). The cohort tensors take about 20 bytes per case and voxel (30 counted for
# preprocessing's copies), Python and torch themselves 0.65 GiB. bf16 autocast on CUDA roughly halves steps.
TRAIN_FIXED_BYTES = int(0.65 * GIB)
COHORT_BYTES_PER_VOXEL = 30


def step_bytes_per_voxel(stage: str, network: dict) -> float:
    """Estimated bytes per sample and grid voxel of one training step of `stage` with the network arguments
    `network` (the config's teacher or student section; defaults as in reactkd.models)."""
    if stage == "student":
        return 300 + 47 * float(network.get("init_filters", 16))
    depths = network.get("depths", (2, 2, 2, 2))
    per_voxel = (3800 + 50 * float(network.get("feature_size", 48))) * (1 + 0.14 * (sum(depths) - 4))
    return per_voxel * (0.65 if stage == "teacher-dose" else 1.0)


def training_peak_bytes(stage: str, network: dict, grid: tuple[int, int, int], batch_size: int,
                        n_cases: int, n_doses: int = 0) -> tuple[int, int]:
    """(host bytes, step bytes) of a training run: the host holds Python, torch and the cohort (and, for the
    dose teacher, each case's float32 CT channel at `n_doses` doses, counted twice for the stacking copy); a
    step's activations come on top, on the host for a CPU run, on the GPU for a CUDA run."""
    voxels = int(grid[0]) * int(grid[1]) * int(grid[2])
    host = TRAIN_FIXED_BYTES + (COHORT_BYTES_PER_VOXEL + 8 * int(n_doses)) * voxels * n_cases
    return host, int(step_bytes_per_voxel(stage, network) * voxels * batch_size)
