"""Receptive fields as plain data, and their text: what one output element sees of the input.

The per-call rules that compute them are in `field_rules`, the walk over one recorded forward pass in
`receptive`. No torch here: a field travels inside `layer_rows.Row`s, which the command line's own process
unpickles and prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Axis:
    """The receptive field along one spatial axis, in input pixels."""

    size: int  # pixels one output position spans (padding included)
    jump: int  # pixels between neighbouring output positions; 0 once the positions are pooled away
    start: int  # the first pixel output position 0 sees (negative: it lies in padding)

    def window(self, position: int) -> tuple[int, int]:
        """First and last input pixel seen by output `position`."""
        first = self.start + position * self.jump
        return first, first + self.size - 1


@dataclass(frozen=True)
class ReceptiveField:
    """What one output element sees of the input, per spatial axis (H, W for images)."""

    axes: tuple[Axis, ...] = ()  # empty when unknown
    image: tuple[int, ...] = ()  # the input's spatial size
    whole: bool = False  # every output element sees every input pixel
    dense: bool = True  # every pixel inside the window reaches the output (False: there may be gaps)
    unknown: str = ""  # when not computable: the call that made it so

    @property
    def size(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def jump(self) -> tuple[int, ...]:
        return tuple(a.jump for a in self.axes)

    @property
    def pooled(self) -> bool:
        """Position no longer matters: every output element sees the same pixels (after a global pool, a
        linear layer on a flattened map, or a gate computed from one of them)."""
        return bool(self.axes) and all(a.jump == 0 for a in self.axes)

    def seen(self) -> tuple[int, ...]:
        """Input pixels per axis inside the window of position 0, clipped to the image."""
        return tuple(max(0, min(a.start + a.size, n) - max(a.start, 0))
                     for a, n in zip(self.axes, self.image, strict=False))

    def __str__(self) -> str:
        if self.unknown:
            return f"unknown ({self.unknown})"
        gaps = "" if self.dense else ", gaps possible"
        if self.pooled:
            return ("whole input" if self.whole else f"{dims_text(self.seen())} of {dims_text(self.image)}") + gaps
        return dims_text(self.size) + (" (whole input)" if self.whole else "") + gaps


def dims_text(values: Iterable[int]) -> str:
    """'3x5' for (3, 5)."""
    return "x".join(str(v) for v in values)


def jump_text(rf: ReceptiveField | None) -> str:
    """'2', or '2x1' when the axes differ; '-' when there are no positions (or no field)."""
    if rf is None or rf.unknown or rf.pooled:
        return "-"
    return str(rf.jump[0]) if len(set(rf.jump)) == 1 else dims_text(rf.jump)


def field_dict(rf: ReceptiveField | None) -> dict[str, Any] | None:
    """A field as JSON data: size, jump and start per axis, whole, dense and its text; or what made it unknown."""
    if rf is None:
        return None
    if rf.unknown:
        return {"unknown": rf.unknown}
    return {"size": list(rf.size), "jump": list(rf.jump), "start": [a.start for a in rf.axes],
            "whole": rf.whole, "dense": rf.dense, "text": str(rf)}
