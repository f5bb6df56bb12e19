"""The equations of the method (docs/method.md), one function each.

* Eq. 1 — :func:`distance`: mean squared difference of two activations.
* Eq. 2 — :func:`invariance_scores` (a set in memory) and :class:`InvarianceMeter` (the same,
  streamed over a data set): ``S = 1 − d(x, G(x)) / mean_j d(x, x_j)``.
* Eq. 3 — :func:`dai_loss`: mean within-seed pair distance over mean all-pair distance.
* Eq. 4 — :func:`layer_weights`: the exponential per-layer weights α_l; :class:`DAILoss`: the
  total loss ``(1 − α)·CE + Σ_l α_l·L_l`` as a module, for the Trainer and a user's own loop.

Nothing here builds a B×B or N×N matrix. The sums over pairs use
``Σ_{i<j∈S} ‖a_i − a_j‖² = n·Σ_{i∈S} ‖a_i − ā_S‖² (= n·Σ‖a_i‖² − ‖Σ a_i‖²)``
and the mean distance to a set uses
``Σ_j ‖a_i − a_j‖² = N‖a_i‖² − 2 a_i·Σ_j a_j + Σ_j ‖a_j‖²``.
All sums are taken in float32 (float64 where the caller passes it), also under bf16 autocast.
"""

from __future__ import annotations

from dainv.invariance.groups import GroupIndex
from dainv.invariance.loss import DAI_EPS, DAILoss, dai_loss, dai_loss_pairwise, layer_weights
from dainv.invariance.score import InvarianceMeter, distance, invariance_scores

__all__ = [
    "distance", "dai_loss", "DAILoss", "dai_loss_pairwise", "GroupIndex", "layer_weights", "invariance_scores",
    "InvarianceMeter", "DAI_EPS",
]  # fmt: skip
