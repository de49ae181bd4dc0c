"""The engine's model catalogue and the request check it answers: which models exist and which
properties each predicts. DOMAIN.md: "the engine says which it supports" — so a request is checked
against what the engine lists, not against a list of our own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.runtime.errors import ValidationError


@dataclass(frozen=True)
class ModelProperty:
    name: str
    units: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    version: str
    properties: tuple[ModelProperty, ...]
    description: str = ""


@dataclass(frozen=True)
class Catalogue:
    models: tuple[Model, ...]

    def model_names(self) -> list[str]:
        return sorted(m.name for m in self.models)

    def properties_of(self, model: str = "") -> list[str]:
        """What `model` predicts; with no model, what any model predicts (the engine picks per property)."""
        chosen = [m for m in self.models if not model or m.name == model]
        return sorted({p.name for m in chosen for p in m.properties})

    def knows(self, properties: Sequence[str], model: str) -> bool:
        return (not model or model in self.model_names()) and set(properties) <= set(self.properties_of(model))

    def check(self, properties: Sequence[str], model: str) -> None:
        """ValidationError naming each unknown model or property and listing what is accepted."""
        violations: list[tuple[str, str]] = []
        if model and model not in self.model_names():
            violations.append(("model", f"unknown model {model!r}; one of: {', '.join(self.model_names())}"))
        else:
            accepted = self.properties_of(model)
            by = f"model {model!r}" if model else "any model of the engine"
            violations += [
                (f"properties[{index}]", f"{name!r} is not predicted by {by}; one of: {', '.join(accepted)}")
                for index, name in enumerate(properties)
                if name not in accepted
            ]
        if violations:
            raise ValidationError(f"Invalid {violations[0][0]}: {violations[0][1]}", field_violations=violations)
