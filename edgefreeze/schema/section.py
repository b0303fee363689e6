"""What every section of the pipeline file shares, and the registries through which a
kind (a freezing plan, a PEFT method) adds its own settings.

The schema imports no kind: each kind's settings class registers itself here under the
kind's name, and a section whose key names a kind (`freeze.plan`, `peft.method`) is
validated by that class, so its errors carry the kind's own dotted keys.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from edgefreeze.registry import Registry

Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, never silently ignored, and a
    number must be finite (a NaN compares false with every bound, so without this a NaN
    rate would be refused with a bound's message)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


S = TypeVar("S", bound=Section)


class KindSettings(Registry[type[S]], Generic[S]):
    """Name -> settings class of one sort of kind, all subclasses of `base`, whose
    `field` names the kind in the pipeline file."""

    def __init__(self, what: str, base: type[S], field: str) -> None:
        super().__init__(what)
        self.base, self.field = base, field

    def validator(self, default: dict[str, Any] | None = None) -> Callable[[Any, Any], Any]:
        """A pydantic wrap validator for the section: the named kind's settings class
        validates it (`default` stands in for a section left out)."""

        def validate(value: Any, handler: Any) -> Any:
            if isinstance(value, self.base):
                return value
            if value is None:
                value = default
            if not isinstance(value, dict):
                return handler(value)  # pydantic's own "should be a valid dictionary"
            field = self.base.model_fields[self.field]
            if self.field not in value and field.is_required():
                raise ValueError(
                    f"{self.field}: required key is missing (known: {', '.join(self.names())})"
                )
            name = value.get(self.field, field.default)
            settings = self.get(name) if isinstance(name, str) else None
            if settings is None:
                raise ValueError(f"{self.field}: {self.unknown(name)}")
            return settings.model_validate(value)

        return validate


K = TypeVar("K")


class KindRegistry(Registry[K], Generic[K]):
    """Name -> kind (a plan, a method), whose class attribute `config` is its settings
    class: registering a kind registers its settings under the same names, so a kind
    defined outside edgefreeze touches one place."""

    def __init__(self, what: str, settings: KindSettings[Any]) -> None:
        super().__init__(what)
        self.settings = settings

    def register(self, *names: str) -> Callable[[K], K]:
        def decorate(kind: K) -> K:
            self.settings.register(*names)(kind.config)  # type: ignore[attr-defined]
            return super(KindRegistry, self).register(*names)(kind)

        return decorate
