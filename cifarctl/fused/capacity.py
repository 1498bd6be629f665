"""How many runs to fuse by default: as many as the free GPU memory holds, up to MAX_MEMBERS.

    k = default_fuse("auto", sharing=2)     # 1 on the CPU; on a free 80 GB GPU, 16

On the CPU fusing gains nothing (BENCHMARKS.md: a grouped convolution there is no faster
than K convolutions), so the default is 1 (no fusing). On CUDA, the free memory (divided
among the `sharing` workers that use the same GPU) over a conservative per-member estimate.
"""

from __future__ import annotations

# GPU memory one fused member may take: a resnet32 at batch 128 in bf16 needs about 0.3 GiB
# of activations and a few MiB of weights and buffers; evaluation batches of 1024 and the
# allocator's slack add to it. 1.5 GiB leaves room for deeper ResNets (resnet110 is 3.6x
# resnet32) too. benchmarks/gpu_check.sh records the measured peak memory per K.
MEMBER_BYTES = 1.5 * 2**30
MAX_MEMBERS = 16  # the largest group benchmarks/throughput.py measures (K = 1..16)


def default_fuse(device: str, sharing: int = 1) -> int:
    """Members per fused group for runs on `device` ("auto", "cpu", "cuda", "cuda:N")."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return 1
    index = int(device.partition(":")[2] or 0)
    free, _ = torch.cuda.mem_get_info(index)
    return max(1, min(MAX_MEMBERS, int(free / max(sharing, 1) // MEMBER_BYTES)))
