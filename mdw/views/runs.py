"""The Runs tab's view: the new-run form's choices (the library's own lists), short run labels and
the loss curves of a run's events (the one place that de-duplicates re-logged steps).

    choices = form_choices()                  # FormChoices(sources, presets, devices)
    short_label("20250102-030405-demo-scenes-ab12")  -> "demo-scenes #ab12 · 01-02 03:04"
    curves = loss_curves(store.read_events(run_id))  # LossCurves(experts={name: Curve}, ltm=Curve)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

EXPERT_KEYS = ("train_loss_A", "train_loss_B", "train_loss", "auc")
DEVICES = ("auto", "cpu", "cuda")
_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})-(\d{2})(\d{2})(\d{2})-(.+)-([0-9a-f]{4})$")


@dataclass
class FormChoices:
    sources: list          # mdw.config.SOURCES
    presets: list          # mdw.models.presets.preset_choices(): the built-in presets, then family examples
    devices: list          # auto | cpu | cuda (cuda:N typed by hand)


@dataclass
class Curve:
    steps: list = field(default_factory=list)     # int, ascending, each once
    values: list = field(default_factory=list)    # float, the latest value logged at each step

    def __bool__(self) -> bool:
        return bool(self.steps)


@dataclass
class LossCurves:
    experts: dict          # name (EXPERT_KEYS) -> Curve over expert epochs; only names with values
    ltm: Curve             # L_TM per distillation iteration

    def empty(self) -> bool:
        return not self.experts and not self.ltm


def form_choices() -> FormChoices:
    """The data sources, model presets and devices the new-run form offers."""
    from ..config import SOURCES
    from ..models.presets import preset_choices
    return FormChoices(list(SOURCES), preset_choices(), list(DEVICES))


def short_label(run_id: str) -> str:
    """A run id as "name #hash · MM-DD HH:MM" (ids made by RunStore.create); other ids unchanged."""
    m = _ID.match(str(run_id))
    if not m:
        return str(run_id)
    _y, mo, d, h, mi, _s, name, tag = m.groups()
    return f"{name} #{tag} · {mo}-{d} {h}:{mi}"


def latest_per_step(events: list, stage: str, key: str) -> Curve:
    """The numeric `key` of the events of `stage`, one value per step: a resumed stage re-logs its
    steps, and the latest logged value wins. Non-numeric values (null for non-finite) are skipped."""
    last = {}
    for e in events:
        if e.get("stage") == stage and isinstance(e.get(key), (int, float)) and not isinstance(e.get(key), bool):
            last[int(e["step"])] = float(e[key])
    steps = sorted(last)
    return Curve(steps, [last[s] for s in steps])


def loss_curves(events: list) -> LossCurves:
    """Expert losses and detection AUC per epoch, L_TM per distillation iteration, from the rows of
    a run's events.jsonl (RunStore.read_events)."""
    experts = {k: c for k in EXPERT_KEYS if (c := latest_per_step(events, "experts", k))}
    return LossCurves(experts, latest_per_step(events, "distill", "L_TM"))
