"""The published numbers, always labelled as the paper's in the report. Sources: Hernández-García, König &
Kietzmann, "Learning robust visual representations using data augmentation invariance" (CCN 2019,
arXiv:1906.04547) and the chapter "Data augmentation invariance" of Hernández-García's PhD thesis (2020)."""

from __future__ import annotations

#: What every published number below is of: All-CNN-C (any width) on CIFAR-10; shown only for such
#: runs (:attr:`dainv.report.load.Reproduction.paper`).
PAPER_MODEL: str = "allcnnc"
PAPER_DATA: str = "cifar10"

#: All-CNN-C on CIFAR-10, test accuracy, CCN 2019 paper.
PAPER_ACCURACY: dict[str, float] = {"baseline": 0.915, "dai": 0.922}
#: The same, from the thesis chapter's table.
PAPER_ACCURACY_THESIS: dict[str, float] = {"baseline": 0.9148, "dai": 0.9247}

#: Layers of :data:`PAPER_MEDIANS` ("input, 1…8"; the thesis figure gives no value for conv9).
PAPER_MEDIAN_LAYERS: tuple[str, ...] = ("input",) + tuple(f"conv{i}" for i in range(1, 9))
#: Median invariance score per layer, read off the thesis figure (±0.02), layers input, conv1…conv8.
PAPER_MEDIANS: dict[str, list[float]] = {
    "baseline": [0.55, 0.49, 0.37, 0.41, 0.42, 0.46, 0.48, 0.50, 0.48],
    "dai": [0.55, 0.57, 0.49, 0.59, 0.87, 0.95, 0.96, 0.99, 0.99],
}
#: DAI's training-time overhead over the baseline ("about 10 %"), the epochs of the paper's runs,
#: and where its times were measured (2.5 h for 350 epochs).
PAPER_OVERHEAD: float = 0.10
PAPER_EPOCHS: int = 350
PAPER_HARDWARE: str = "one GTX 1080 Ti"

#: The thesis's other networks and data (baseline → DAI), accuracies as fractions.
THESIS_OTHER_NETWORKS: dict[str, dict[str, float]] = {
    "WRN-28-10, CIFAR-10": {"baseline": 0.9458, "dai": 0.9486},
    "DenseNet-BC-100 (k=12), CIFAR-10": {"baseline": 0.9488, "dai": 0.9398},
    "All-CNN (ImageNet variant), Tiny ImageNet, top-1": {"baseline": 0.5109, "dai": 0.5257},
    "All-CNN (ImageNet variant), Tiny ImageNet, top-5": {"baseline": 0.7348, "dai": 0.7653},
}

#: Presets long enough to show the size of the paper's effect.
LONG_PRESETS: tuple[str, ...] = ("cpu-short", "paper")


def paper_median(arm: str, layer: str) -> float | None:
    """The paper's median invariance of ``arm`` at ``layer``, or None where it gives none."""
    if arm in PAPER_MEDIANS and layer in PAPER_MEDIAN_LAYERS:
        return PAPER_MEDIANS[arm][PAPER_MEDIAN_LAYERS.index(layer)]
    return None

