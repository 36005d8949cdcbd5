"""Distillation (METHOD §4-6): the distilled set (Ṽ, T̃, P̃, α), trajectory matching, CEO."""
