"""Midjourney button labels as the button-style APIs (ImaginePro, useapi) show them
(PROVIDERS.md §7): which labels exist, and which buttons a finished job offers next."""

from __future__ import annotations

ARROWS: tuple[str, ...] = ("⬅️", "➡️", "⬆️", "⬇️")

#: the buttons of a fresh 2x2 grid
GRID: tuple[str, ...] = ("U1", "U2", "U3", "U4", "🔄", "V1", "V2", "V3", "V4")

_VARY_ZOOM: tuple[str, ...] = (
    "Vary (Subtle)",
    "Vary (Strong)",
    "Vary (Region)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
    "Make Square",
    *ARROWS,
)

#: label pressed -> the buttons the resulting image offers
_NEXT: dict[str, tuple[str, ...]] = {
    **{f"U{i}": ("Upscale (Subtle)", "Upscale (Creative)", *_VARY_ZOOM) for i in range(1, 5)},
    "Upscale (Subtle)": ("Redo Upscale (Subtle)", "Redo Upscale (Creative)", *_VARY_ZOOM),
    "Upscale (Creative)": ("Redo Upscale (Subtle)", "Redo Upscale (Creative)", *_VARY_ZOOM),
    "Upscale (2x)": ("Redo Upscale (2x)", "Redo Upscale (4x)", *_VARY_ZOOM),
    "Upscale (4x)": ("Redo Upscale (2x)", "Redo Upscale (4x)", *_VARY_ZOOM),
}
_NEXT["Redo Upscale (Subtle)"] = _NEXT["Upscale (Subtle)"]
_NEXT["Redo Upscale (Creative)"] = _NEXT["Upscale (Creative)"]
_NEXT["Redo Upscale (2x)"] = _NEXT["Upscale (2x)"]
_NEXT["Redo Upscale (4x)"] = _NEXT["Upscale (4x)"]


def buttons_after(label: str) -> tuple[str, ...]:
    """The buttons on the image a press of ``label`` produces (a grid for anything else)."""
    return _NEXT.get(label, GRID)
