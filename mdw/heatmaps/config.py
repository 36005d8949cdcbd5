"""The heatmaps stage's settings (a RunConfig field); imports nothing heavy, so mdw.config can use it."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass
class HeatmapConfig:
    """Heatmaps precomputed by the run (METHOD §7); RunConfig field `heatmaps`."""
    enabled: bool = True
    n_most: int = 32             # most trusted training pairs (highest consensus clean score)
    n_least: int = 32            # least trusted training pairs
    track: str = "A"             # which expert track's final model draws the maps
    shifts: int = 4              # shift-and-stitch passes per axis (1: one pass, the coarse last map)
    batch_size: int = 64

    def validate(self) -> "HeatmapConfig":
        if self.n_most < 0 or self.n_least < 0:
            raise ConfigError(f"heatmaps: n_most and n_least must be >= 0, got {self.n_most}, {self.n_least}")
        if self.shifts < 1:
            raise ConfigError(f"heatmaps.shifts: must be >= 1, got {self.shifts}")
        if self.batch_size < 1:
            raise ConfigError(f"heatmaps.batch_size: must be >= 1, got {self.batch_size}")
        return self
