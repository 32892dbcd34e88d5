"""Our upscale action names and the Midjourney button labels they stand for."""

from __future__ import annotations

from receiver.errors import BadRequest

#: our normalised action name -> the Midjourney button label
LABELS: dict[str, str] = {
    "U1": "U1",
    "U2": "U2",
    "U3": "U3",
    "U4": "U4",
    "upscale_2x": "Upscale (2x)",
    "upscale_4x": "Upscale (4x)",
    "upscale_subtle": "Upscale (Subtle)",
    "upscale_creative": "Upscale (Creative)",
    "redo_upscale_2x": "Redo Upscale (2x)",
    "redo_upscale_4x": "Redo Upscale (4x)",
    "redo_upscale_subtle": "Redo Upscale (Subtle)",
    "redo_upscale_creative": "Redo Upscale (Creative)",
}

ALL_ACTIONS: tuple[str, ...] = tuple(LABELS)
GRID_ACTIONS: tuple[str, ...] = ("U1", "U2", "U3", "U4")

_ALIASES: dict[str, str] = {}
for _name, _label in LABELS.items():
    _ALIASES[_name.lower()] = _name
    _ALIASES[_label.lower()] = _name


def normalise_action(text: str) -> str:
    """Our name for an action given by name or Midjourney label (``Upscale (2x)``).

    Raises ``BadRequest`` naming the known actions when the text is neither.
    """
    name = _ALIASES.get(" ".join(text.split()).lower())
    if name is None:
        raise BadRequest(f"unknown action {text!r}", field="action", known=list(ALL_ACTIONS))
    return name


def grid_index(action: str) -> int:
    """1-4 for U1-U4."""
    return int(action[1])
