"""Modality dropout: train the student to cope with missing PET, down to CT alone."""

from __future__ import annotations

import torch

from reactkd.models.base import check_inputs


def apply_modality_dropout(
    images: torch.Tensor,
    available: torch.Tensor,
    p: float = 0.3,
    generator: torch.Generator | None = None,
    ct_only_share: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop each optional modality of each sample independently with probability ``p``; before that, a
    ``ct_only_share`` of the samples (drawn per sample) lose every PET: the deployment input, CT alone,
    gets that share of the training at least (more where PET is missing or dropped anyway).

    A dropped channel is zeroed and its flag turned off; CT (channel 0) is never dropped; a modality
    already absent stays absent. Returns new tensors and leaves the inputs untouched (the teachers keep
    seeing the originals).

    Args:
        images: (B, 3, D, H, W) in ``reactkd.MODALITIES`` order.
        available: (B, 3) bool.
        p: drop probability in [0, 1].
        generator: optional ``torch.Generator`` for reproducible draws; the draws are made on its device
            and moved to the images' device, so a CPU generator also works for CUDA tensors.
    """
    check_inputs(images, available)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"modality dropout probability must be in [0, 1], got {p}")
    n_optional = available.shape[1] - 1
    draw_device = generator.device if generator is not None else available.device
    draws = torch.rand((available.shape[0], n_optional), generator=generator, device=draw_device)
    if not 0.0 <= ct_only_share <= 1.0:
        raise ValueError(f"the CT-only share must be in [0, 1], got {ct_only_share}")
    keep_optional = draws >= p
    if ct_only_share > 0:  # no extra draw at 0: a run without the setting keeps its random stream
        keep_optional &= torch.rand((available.shape[0], 1), generator=generator, device=draw_device) >= ct_only_share
    keep_optional = keep_optional.to(available.device)
    keep = torch.cat([torch.ones_like(available[:, :1]), keep_optional], dim=1)
    available_dropped = available & keep
    images_dropped = torch.where(
        keep[:, :, None, None, None], images, torch.zeros((), dtype=images.dtype, device=images.device)
    )
    return images_dropped, available_dropped
