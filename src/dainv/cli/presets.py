"""``dainv presets``: the presets and what each is for."""

from __future__ import annotations

import argparse

from dainv.config import PROTOCOLS


def _presets(args: argparse.Namespace) -> int:
    from dainv.config import PRESET_DIR, list_presets, load_preset

    names = list_presets()
    w = max(len(n) for n in names) if names else 10
    for name in names:
        desc = str(load_preset(name).get("description", "")).strip().splitlines()
        print(f"{name:{w}s}  {desc[0] if desc else ''}")
    print(
        f"(files in {PRESET_DIR.resolve()}; protocols: {', '.join(PROTOCOLS)}, docs/method.md §8–9)"
    )
    return 0
