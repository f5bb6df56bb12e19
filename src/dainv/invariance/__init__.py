"""The equations of the method (docs/method.md), one function each: Eq. 1 :func:`distance`,
Eq. 2 :func:`invariance_scores` / :class:`InvarianceMeter` (streamed), Eq. 3 :func:`dai_loss`,
Eq. 4 :func:`layer_weights` and :class:`DAILoss`. No B×B or N×N matrix: pair sums use
``Σ_{i<j∈S} ‖a_i − a_j‖² = n·Σ‖a_i‖² − ‖Σ a_i‖²``; sums in float32 (float64 if given)."""

from __future__ import annotations

from dainv.invariance.groups import GroupIndex
from dainv.invariance.loss import DAI_EPS, DAILoss, dai_loss, dai_loss_pairwise, layer_weights
from dainv.invariance.score import InvarianceMeter, distance, invariance_scores

__all__ = [
    "distance", "dai_loss", "DAILoss", "dai_loss_pairwise", "GroupIndex", "layer_weights", "invariance_scores",
    "InvarianceMeter", "DAI_EPS",
]  # fmt: skip
