"""Typed configuration of a run. Every default lives here; a run's config is one JSON file.

`RunConfig.from_dict` rejects unknown keys and wrong types with the dotted key at fault;
`apply_overrides(cfg, ["data.eta=0.4"])` is what `--set key=value` does on the CLI.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field

from .errors import ConfigError
from .evaluate.view_config import IndexConfig, ProjectionConfig
from .heatmaps.config import HeatmapConfig

SOURCES = ("scenes", "flickr8k", "karpathy", "csv", "jsonl", "webdataset")
# The demo run (`bash scripts/demo`, the app on an empty runs folder, `bench demo`), from the repository root
DEMO_CONFIG = os.path.join("assets", "configs", "demo.json")


def demo_config_path() -> str:
    """The built-in demo run config's absolute path."""
    from .runs.manager import repo_root
    return os.path.join(repo_root(), DEMO_CONFIG)


@dataclass
class ScenesConfig:
    """The built-in procedurally drawn scenes (see mdw/data/scenes.py)."""
    n_train: int = 3000          # images; each has 3-5 captions
    n_dev: int = 300
    n_test: int = 500
    seed: int = 0
    min_objects: int = 1
    max_objects: int = 3
    min_captions: int = 3
    max_captions: int = 5


@dataclass
class DataConfig:
    source: str = "scenes"       # one of SOURCES, or "auto" (detected from `path`)
    path: str = ""               # folder, JSON/CSV/JSONL file, or shard folder / glob
    image_root: str = ""         # where Karpathy JSON / CSV image paths are relative to
    eta: float = 0.0             # fraction of training pairs whose images are deranged (METHOD §1)
    noise_seed: int = 0
    image_size: int = 64         # the size images are decoded and cached at
    max_skip_fraction: float = 0.05  # bad items skipped up to this fraction, else an error
    scenes: ScenesConfig = field(default_factory=ScenesConfig)

    def validate(self):
        if self.source not in SOURCES + ("auto",):
            raise ConfigError(f"data.source: unknown source {self.source!r}; known: {', '.join(SOURCES)}, auto")
        if not (0.0 <= self.eta < 1.0):
            raise ConfigError(f"data.eta: noise ratio must be in [0, 1), got {self.eta!r}")
        if self.image_size < 8:
            raise ConfigError(f"data.image_size: must be at least 8, got {self.image_size}")
        if self.source != "scenes" and not self.path:
            raise ConfigError(f"data.path: source {self.source!r} needs a path")
        s = self.scenes
        if not (1 <= s.min_objects <= s.max_objects <= 3):
            raise ConfigError("data.scenes: need 1 <= min_objects <= max_objects <= 3")
        if not (1 <= s.min_captions <= s.max_captions):
            raise ConfigError("data.scenes: need 1 <= min_captions <= max_captions")


@dataclass
class ModelConfig:
    """The model families (mdw/models/presets.py): a built-in preset (cpu-small, cpu-wide, gpu-base,
    nfnet-bert), "timm:NAME[:WEIGHTS]", or an open_clip "ARCH[:TAG_OR_PATH]"."""
    preset: str = "cpu-small"    # a preset name, "timm:NAME[:pretrained|TAG|/path]", "ARCH", "ARCH:TAG" or "ARCH:/path/to.pt"
    embed_dim: int = 0           # 0: the preset's own
    device: str = "auto"         # auto | cpu | cuda | cuda:N
    text: str = ""               # "": the preset's own text encoder (MiniLM, offline); "hf:NAME_OR_PATH": any HF / sentence-transformers encoder as g0
    text_pooling: str = "auto"   # g0's pooling for model.text: auto (a sentence-transformers folder's own, else [CLS]) | mean | cls
    image_trainable: bool = True  # False: the image tower's body is frozen (its head, h and τ train; the buffer holds only those)

    def validate(self):
        if self.text_pooling not in ("auto", "mean", "cls"):
            raise ConfigError(f"model.text_pooling: unknown {self.text_pooling!r}; known: auto, mean, cls")


@dataclass
class ExpertConfig:
    """Expert training (METHOD §2-3): DTCL's two tracks, or one plain InfoNCE track."""
    dtcl: bool = True            # False: the plain InfoNCE expert (same trainer, one track)
    epochs: int = 8
    batch_size: int = 128
    optimizer: str = "sgd"       # sgd (MTT's buffer: SGD students can follow its moves) | adam
    lr: float = 0.03             # the optimizer's lr
    momentum: float = 0.9        # sgd only
    grad_clip: float = 1.0       # clip each step's gradient norm (0: off); without it plain SGD experts at eta 0 stayed at log(B)
    weight_decay: float = 0.0
    warmup_epochs: int = 1       # DTCL: no split yet for these epochs (ours)
    warmup_loss: str = "full"    # full: InfoNCE + λ_c L_comp, every pair trusted | comp: L_comp alone
    #   (L_comp alone moves SGD experts ~1/B as far: Flickr8k η=0.4, 3 epochs, AUC 0.68 -> 0.86 with full)
    lambda_c: float = 1.0        # weight of the complementary loss next to the weighted InfoNCE
    weighting: str = "soft"      # soft: w = partner's clean probability | hard: w = [w > 0.5]
    flag_threshold: float = 0.5  # flagged noisy when the consensus score is below this
    buffer_epochs: int = 0       # epochs kept in the buffer (0: what distillation reads, max_start_epoch + expert_epochs)
    autocast: str = "auto"       # auto: bf16 on CUDA, off on CPU | bf16 | off
    eval_every: int = 1          # expert recall on the clean test split every N epochs (and the last)

    def validate(self):
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("experts: need epochs >= 1 and batch_size >= 2")
        if not (0 <= self.warmup_epochs <= self.epochs):
            raise ConfigError(f"experts.warmup_epochs: must be in [0, experts.epochs={self.epochs}]")
        if self.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"experts.optimizer: {self.optimizer!r} is not one of adam, sgd")
        if self.warmup_loss not in ("comp", "full"):
            raise ConfigError(f"experts.warmup_loss: unknown {self.warmup_loss!r}; known: comp, full")
        if self.weighting not in ("soft", "hard"):
            raise ConfigError(f"experts.weighting: unknown {self.weighting!r}; known: soft, hard")
        if self.autocast not in ("auto", "bf16", "off"):
            raise ConfigError(f"experts.autocast: unknown {self.autocast!r}; known: auto, bf16, off")
        if not (0.0 < self.flag_threshold < 1.0):
            raise ConfigError(f"experts.flag_threshold: must be in (0, 1), got {self.flag_threshold}")


@dataclass
class DistillConfig:
    """Distillation (METHOD §4-6): M pairs matched to the experts' trajectories."""
    m: int = 50                  # distilled pairs
    iterations: int = 200
    syn_steps: int = 8           # N student steps per iteration
    expert_epochs: int = 2       # K: target θ*_{s+K}
    max_start_epoch: int = 4     # s < max_start_epoch
    syn_batch: int = 0           # student minibatch size; 0: all M
    loss: str = "soft"           # soft (contrastive vs row-normalised P̃) | wbce | lors: LoRS's wBCE (docs/lors.md)
    labels: str = "soft"         # soft: P̃ learned (MDW) | identity: hard labels | lowrank: sigmoid(Z₀ + U Vᵀ)
    #                              (our earlier LoRS approximation) | lors: LoRS's S̃ = diag(ω) + (α/r) L Rᵀ
    rank: int = 4                # r of the low-rank labels (lowrank, lors)
    lors_alpha: float = 3.0      # α of LoRS's S̃ (labels=lors; their Flickr-100 script: 3, rank 10)
    z_init: float = 3.0          # a: Z = +a on the diagonal, −a elsewhere (METHOD §4); <= 0: a = log(9(M−1))
    ceo: bool = True             # correspondence-enhanced pixel updates (§6)
    ceo_topk: int = 3
    ceo_floor: float = 0.2       # λ: no pixel is frozen
    ceo_refresh: int = 10        # R: masks recomputed every R iterations
    lr_images: float = 0.001     # the pixels' lr (in [0, 1] units) under images_optimizer; Adam 0.01 eroded the
    #                              images (docs/benchmarks/pixel_lr_wide_dev.md: the more they move, the worse)
    images_optimizer: str = "adam"   # the pixels' optimiser: adam | sgd (with images_momentum, as MTT and LoRS).
    #                              Adam divides each pixel's step by its own gradient scale, so CEO's per-pixel
    #                              rescaling cancels out of an Adam step wherever a pixel's weight stays the same
    #                              from one mask refresh to the next (tests/test_distill.py)
    images_momentum: float = 0.5     # sgd: momentum of the pixel updates (MTT, LoRS: 0.5)
    lr_text: float = 0.0005      # Adam, g0 features
    lr_z: float = 0.2            # Adam, P̃'s logits (a = 3, lr 0.2: chosen on the dev split, docs/benchmarks/distill_sweep.md)
    lr_alpha: float = 0.01       # Adam, log step sizes
    alpha_init: str = "lr"       # lr: the experts' lr (METHOD §4) | auto: N steps cover the expert's K-epoch move (ours)
    alpha_start: float = 0.0     # with alpha_init=lr: α's start; 0: the experts' lr
    precondition: bool = False   # True: students step along the experts' Adam scaling (ours; measured worse, off)
    init: str = "clean"          # clean: start from pairs DTCL trusts | random
    snapshots: int = 10          # snapshots of (Ṽ, T̃, P̃) kept, evenly spaced (plus the start and end)
    experts: str = "dtcl"        # which experts' trajectories: dtcl | plain

    def validate(self):
        if self.m < 2 or self.iterations < 0 or self.syn_steps < 1:
            raise ConfigError("distill: need m >= 2, iterations >= 0, syn_steps >= 1")
        if self.labels not in ("soft", "identity", "lowrank", "lors"):
            raise ConfigError(f"distill.labels: unknown {self.labels!r}; known: soft, identity, lowrank, lors")
        if self.loss not in ("soft", "wbce", "lors"):
            raise ConfigError(f"distill.loss: unknown {self.loss!r}; known: soft, wbce, lors")
        if self.rank < 1:
            raise ConfigError(f"distill.rank: must be >= 1, got {self.rank}")
        if self.init not in ("clean", "random"):
            raise ConfigError(f"distill.init: unknown {self.init!r}; known: clean, random")
        if self.alpha_start < 0:
            raise ConfigError(f"distill.alpha_start: must be >= 0, got {self.alpha_start}")
        if self.alpha_init not in ("auto", "lr"):
            raise ConfigError(f"distill.alpha_init: unknown {self.alpha_init!r}; known: auto, lr")
        if self.experts not in ("dtcl", "plain", "filtered"):
            raise ConfigError(f"distill.experts: unknown {self.experts!r}; known: dtcl, plain, filtered")
        if not (0.0 <= self.ceo_floor <= 1.0):
            raise ConfigError(f"distill.ceo_floor: must be in [0, 1], got {self.ceo_floor}")
        if self.images_optimizer not in ("adam", "sgd"):
            raise ConfigError(f"distill.images_optimizer: unknown {self.images_optimizer!r}; known: adam, sgd")
        if not (0.0 <= self.images_momentum < 1.0):
            raise ConfigError(f"distill.images_momentum: must be in [0, 1), got {self.images_momentum}")


EVAL_METHODS = ("random", "clean-coreset", "mtt-vl", "lors", "filter-mtt-vl", "filter-lors", "mdw", "mdw-init",
                "ladder-alpha", "ladder-text", "ladder-p", "ladder-images", "mdw-no-dtcl", "mdw-no-p", "mdw-no-ceo",
                "expert-plain", "expert-dtcl")   # mdw/evaluate/methods.py says what each is; "ladder": its rungs


@dataclass
class EvalConfig:
    """Students trained from scratch on each method's M pairs (METHOD §8); recall on clean test."""
    methods: list = field(default_factory=lambda: ["random", "mdw", "expert-dtcl"])  # of EVAL_METHODS, "NAME@adam"
    seeds: int = 3               # student seeds (mean ± std)
    steps: int = 300             # student optimiser steps
    batch_size: int = 0          # student minibatch; 0: all M pairs each step
    optimizer: str = "alpha"     # alpha: one protocol, SGD per parameter group: a distilled set at its learned α
                                 #   (METHOD §8), a coreset at coreset_lr | adam: every method by Adam at lr
    lr: float = 1e-3             # Adam's lr (evaluate.optimizer=adam, or a method written NAME@adam)
    coreset_lr: float = 0.1      # SGD lr of a coreset's students (every group); 0: the experts' lr. 0.1: best on the
                                 #   scenes dev split at M 20 and 50, per group too (docs/benchmarks/coreset_protocol.md)
    coreset_lr_groups: list = field(default_factory=list)  # a coreset's SGD lr per parameter group (visual, text,
                                 #   logit_scale), overriding coreset_lr; []: coreset_lr for every group
    alpha_scale: float = 1.0     # a distilled set's students step at alpha_scale × its learned α; 1: the learned α
                                 #   itself (METHOD §8). Matching learns α for N steps, students take `steps`
                                 #   (docs/benchmarks/alpha_scale_dev.md: 8 best on the scenes dev split; 1 stays
                                 #   the default, METHOD §8)
    filter_fraction: float = -1.0  # filter-* baselines drop this fraction of pairs; < 0: the run's η (0.2 at η = 0)
    cross_arch: str = ""         # a second student preset (e.g. cpu-wide): cross-architecture rows
    baseline_iterations: int = 0  # distillation iterations of the distilled baselines; 0: distill.iterations

    def validate(self):
        bad = [m for m in self.methods if m.partition("@")[0] not in EVAL_METHODS + ("ladder",)
               or m.partition("@")[2] not in ("", "adam")]
        if bad:
            raise ConfigError(f"evaluate.methods: unknown {bad}; known: {', '.join(EVAL_METHODS)}, ladder "
                              f"(each may end in @adam: its students by Adam at evaluate.lr)")
        if self.coreset_lr < 0 or self.filter_fraction >= 1:
            raise ConfigError("evaluate: need coreset_lr >= 0 and filter_fraction < 1")
        try:
            self.coreset_lr_groups = [float(x) for x in self.coreset_lr_groups]
        except (TypeError, ValueError):
            raise ConfigError(f"evaluate.coreset_lr_groups: numbers expected, got {self.coreset_lr_groups!r}") from None
        if self.coreset_lr_groups and (len(self.coreset_lr_groups) != 3 or min(self.coreset_lr_groups) <= 0):
            raise ConfigError(f"evaluate.coreset_lr_groups: one lr > 0 for each of visual, text, logit_scale "
                              f"(or [] for coreset_lr everywhere), got {self.coreset_lr_groups}")
        if self.seeds < 1 or self.steps < 0:
            raise ConfigError("evaluate: need seeds >= 1 and steps >= 0")
        if not self.alpha_scale > 0:
            raise ConfigError(f"evaluate.alpha_scale: must be > 0 (1: the learned α), got {self.alpha_scale}")
        if self.optimizer not in ("adam", "alpha"):
            raise ConfigError(f"evaluate.optimizer: unknown {self.optimizer!r}; known: adam, alpha")


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    cache_dir: str = ""          # "": $MDW_CACHE or ~/.cache/mdw
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    experts: ExpertConfig = field(default_factory=ExpertConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    heatmaps: HeatmapConfig = field(default_factory=HeatmapConfig)
    evaluate: EvalConfig = field(default_factory=EvalConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)

    def validate(self) -> "RunConfig":
        self.data.validate()
        self.model.validate()
        self.experts.validate()
        self.distill.validate()
        self.heatmaps.validate()
        self.evaluate.validate()
        self.index.validate()
        self.projection.validate()
        return self

    def resolved_cache_dir(self) -> str:
        return self.cache_dir or os.environ.get("MDW_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mdw")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """Missing keys take their defaults; a run's config written by an older version is upgraded
        on open (mdw/runs/migrate.py, upgrade_config), not here."""
        return _build(cls, d, "").validate()

    @classmethod
    def load(cls, path: str) -> "RunConfig":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a config must be a JSON object, got {type(d).__name__}")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


def _build(cls, d, prefix: str):
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix or 'config'}: expected an object, got {d!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}; known here: {', '.join(sorted(names))}")
    kwargs = {}
    for k, v in d.items():
        kwargs[k] = _coerce(hints[k], v, prefix + k)
    return cls(**kwargs)


def _coerce(tp, v, key: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, v, key + ".")
    if tp is bool:
        if isinstance(v, bool):
            return v
    elif tp is int:
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    elif tp is float:
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    elif tp is str:
        if isinstance(v, str):
            return v
    elif tp is list:
        if isinstance(v, str):   # --set evaluate.methods=random,mdw
            return [x.strip() for x in v.split(",") if x.strip()]
        if isinstance(v, (list, tuple)):
            return list(v)
    else:
        return v
    raise ConfigError(f"{key}: expected {tp.__name__}, got {v!r}")


def parse_setting(item: str, flag: str = "--set") -> tuple:
    """'key=value' -> (key, value): the value parsed as JSON, else taken as text. Raises ConfigError
    naming `flag` and the item when it has no '=' or no key."""
    key, eq, raw = item.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"{flag} {item!r}: expected key=value")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def apply_overrides(cfg: RunConfig, overrides: list) -> RunConfig:
    """Apply `key=value` strings (dotted keys; values parsed as JSON, else taken as text)."""
    d = cfg.to_dict()
    for item in overrides or []:
        key, value = parse_setting(item)
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"--set {item!r}: unknown key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"--set {item!r}: unknown key {key!r}")
        node[parts[-1]] = value
    return RunConfig.from_dict(d)
