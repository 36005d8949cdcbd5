"""The heatmaps stage's settings (a RunConfig field); imports nothing heavy, so mdw.config can use it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class CamOptions:
    """How the word maps are drawn (`mdw.models.gradcam`, `mdw.heatmaps.compute.word_maps`): the one
    place their defaults live (the heatmaps stage, the app's tabs, `mdw heatmap` and the bench use
    them). The defaults scored best on the scenes pointing game's dev split
    (docs/benchmarks/heatmaps.md); plain Grad-CAM is align=False, shifts=1, positive=False."""
    align: bool = True      # each cell of the map placed where it looks in the image
    shifts: int = 4         # shift-and-stitch: a map shifts× finer per axis (shifts² forward passes)
    positive: bool = True   # only channels whose weight is positive (that raise s(v, w)) count
    relu: bool = True       # ReLU on the weighted sum (standard Grad-CAM)
    contrast: float = 0.7   # the map is drawn for ŵ − contrast·t̂ (t̂: the whole caption's direction):
                            # what the word adds to its caption (its token state shares much of it)
    flip: bool = True       # average with the (un-flipped) map of the horizontally flipped image
    blur: float = 0.03      # Gaussian blur of the final map, σ as a fraction of its side (2 px at 64)
    layer: str = ""         # the tower's map drawn on ("": the last; "stages.1": cpu-small's 8×8 at 64 px)
    weighting: str = "grad"  # grad: Grad-CAM channel weights | layer: Layer-CAM per-cell positive gradients
    attribution: str = "ig+cam"  # cam: Grad-CAM (the settings above) | ig: integrated gradients on the pixels
                            #   (mdw.models.attribution) | ig+cam: the mean of the two maps, each scaled to [0, 1]
    ig_steps: int = 4       # integrated gradients: terms of the Riemann sum from the plain background image
    ig_blur: float = 0.06   # Gaussian blur of the integrated-gradients map, σ as a fraction of its side
    context: tuple = (1.0, 0.5)  # weights of the previous and the next word of the caption added to a word's
                            #   direction (a modifier and its noun name one object); (0, 0): the word alone

    def __post_init__(self):
        if self.attribution not in ("cam", "ig", "ig+cam"):
            raise ConfigError(f"heatmap attribution: unknown {self.attribution!r}; known: cam, ig, ig+cam")
        if self.ig_steps < 1 or len(self.context) != 2:
            raise ConfigError(f"heatmap options: need ig_steps >= 1 and two context weights, got "
                              f"{self.ig_steps}, {self.context}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class HeatmapConfig:
    """Heatmaps precomputed by the run (METHOD §7); RunConfig field `heatmaps`."""
    enabled: bool = True
    n_most: int = 32             # most trusted training pairs (highest consensus clean score)
    n_least: int = 32            # least trusted training pairs
    track: str = "A"             # which expert track's final model draws the maps
    shifts: int = CamOptions.shifts  # shift-and-stitch passes per axis (1: one pass, the coarse last map)
    batch_size: int = 64

    def validate(self) -> "HeatmapConfig":
        if self.n_most < 0 or self.n_least < 0:
            raise ConfigError(f"heatmaps: n_most and n_least must be >= 0, got {self.n_most}, {self.n_least}")
        if self.shifts < 1:
            raise ConfigError(f"heatmaps.shifts: must be >= 1, got {self.shifts}")
        if self.batch_size < 1:
            raise ConfigError(f"heatmaps.batch_size: must be >= 1, got {self.batch_size}")
        return self
