"""dainv — data augmentation invariance (Hernández-García, König & Kietzmann, 2019) in PyTorch."""

from __future__ import annotations

__version__ = "0.1.0"
