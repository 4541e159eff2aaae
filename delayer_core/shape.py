"""The gathered buffer's shape: one 5-field row per rank, (dp_rows, attn_tp_size, 5)."""

from __future__ import annotations

from dataclasses import dataclass

from .decision import NUM_FIELDS


@dataclass(frozen=True)
class GatherShape:
    """``dp_rows`` is dp_size with DP attention, else 1; every rank contributes one row."""

    dp_rows: int
    attn_tp_size: int

    def __post_init__(self) -> None:
        if self.dp_rows < 1 or self.attn_tp_size < 1:
            raise ValueError(f"shape {self.dp_rows}x{self.attn_tp_size} must be positive")

    @property
    def world_size(self) -> int:
        return self.dp_rows * self.attn_tp_size

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.dp_rows, self.attn_tp_size, NUM_FIELDS)

    def __str__(self) -> str:
        return f"{self.dp_rows}x{self.attn_tp_size}"

    @classmethod
    def parse(cls, text: str) -> GatherShape:
        try:
            dp, tp = (int(part) for part in text.lower().split("x"))
        except ValueError:
            raise ValueError(f"shape {text!r} is not DPxTP, e.g. 2x1") from None
        return cls(dp, tp)
