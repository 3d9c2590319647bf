"""The operation registry and what an operation handler receives."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.errors import Invalid, NotFound
from fhir_gateway.request import FhirRequest, FhirResponse


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: str  # FHIR type of the parameter: integer, string, date, Reference, Resource...
    min: int = 0
    max: str = "1"
    use: str = "in"
    documentation: str = ""
    part: tuple[ParamSpec, ...] = ()  # a parameter made of parts has no type of its own

    def definition(self) -> dict:
        out: dict = {"name": self.name, "use": self.use, "min": self.min, "max": self.max}
        if not self.part:
            out["type"] = self.type
        if self.documentation:
            out["documentation"] = self.documentation
        if self.part:
            out["part"] = [p.definition() for p in self.part]
        return out


INTERACTION_OF = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search-type"}


def missing_at_ehr(caps, needs: tuple[tuple[str, str], ...]) -> list[str]:
    """What of `needs` the EHR does not offer, as "Type interaction" phrases."""
    out = []
    for rtype, perm in needs:
        tc = caps.for_type(rtype)
        interaction = INTERACTION_OF[perm]
        if tc is None or not tc.allows(interaction):
            out.append(f"{rtype} {interaction}")
    return out


@dataclass(frozen=True)
class Fallback:
    """Another way to do an operation when the EHR lacks what the direct way needs: `needs`
    at the EHR, and `token_needs` (default: the operation's own) of the caller's token."""

    needs: tuple[tuple[str, str], ...]
    description: str
    token_needs: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True)
class OperationSpec:
    name: str  # without the $
    resource_type: str
    handler: Callable[[OperationContext], FhirResponse]
    title: str
    description: str
    instance: bool = True
    type_level: bool = False
    affects_state: bool = False
    needs: tuple[tuple[str, str], ...] = ()  # (resource type, c|r|u|d|s) the token must have
    parameters: tuple[ParamSpec, ...] = ()
    produces: str | None = None  # a non-FHIR media type the operation answers with (text/html)
    fallback: Fallback | None = None
    ehr_needs: tuple[tuple[str, str], ...] | None = None  # at the EHR; default `needs`

    def path(self, caps) -> tuple[str, tuple[tuple[str, str], ...], str]:
        """How the operation runs at this EHR: ("direct" | "fallback" | "unavailable", what
        the caller's token needs on that path, and what explains it: the fallback, or what
        the EHR lacks)."""
        missing = missing_at_ehr(caps, self.ehr_needs or self.needs)
        if not missing:
            return "direct", self.needs, ""
        if self.fallback is not None and not missing_at_ehr(caps, self.fallback.needs):
            return ("fallback", self.fallback.token_needs or self.needs,
                    self.fallback.description)
        return "unavailable", self.needs, ", ".join(missing)

    @property
    def code(self) -> str:
        return self.name

    def definition(self, base: str) -> dict:
        """The OperationDefinition the gateway serves for this operation."""
        return {
            "resourceType": "OperationDefinition",
            "id": self.definition_id,
            "url": f"{base}/OperationDefinition/{self.definition_id}",
            "name": "".join(p.capitalize() for p in self.name.replace("-", " ").split()),
            "title": self.title,
            "status": "active",
            "kind": "operation",
            "description": self.description,
            "affectsState": self.affects_state,
            "code": self.name,
            "resource": [self.resource_type],
            "system": False,
            "type": self.type_level,
            "instance": self.instance,
            "parameter": [p.definition() for p in self.parameters],
        }

    @property
    def definition_id(self) -> str:
        return f"{self.resource_type}-{self.name}"


@dataclass
class OperationContext:
    """What a handler gets: the request, the base URL, the service, and helpers."""

    request: FhirRequest
    base: str
    service: object  # fhir_gateway.service.FhirService
    params: dict[str, list] = field(default_factory=dict)  # from the query and a Parameters body

    def one(self, name: str, required: bool = False) -> object | None:
        values = self.params.get(name) or []
        if len(values) > 1:
            raise Invalid(f"Parameter {name!r} may be given once", expression=name)
        if not values:
            if required:
                raise Invalid(f"Parameter {name!r} is required", expression=name)
            return None
        return values[0]


class Registry:
    def __init__(self) -> None:
        self._ops: dict[tuple[str, str], OperationSpec] = {}

    def add(self, spec: OperationSpec) -> None:
        self._ops[(spec.resource_type, spec.name)] = spec

    def get(self, resource_type: str, name: str) -> OperationSpec:
        spec = self._ops.get((resource_type, name))
        if spec is None:
            raise NotFound(f"There is no operation ${name} on {resource_type}",
                           expression=f"{resource_type}.${name}", code="not-supported")
        return spec

    def by_definition_id(self, definition_id: str) -> OperationSpec | None:
        return next((s for s in self._ops.values() if s.definition_id == definition_id), None)

    def for_type(self, resource_type: str) -> list[OperationSpec]:
        return [s for s in self._ops.values() if s.resource_type == resource_type]

    def all(self) -> list[OperationSpec]:
        return list(self._ops.values())


def parameters_from(body: dict | None) -> dict[str, list]:
    """A Parameters resource as {name: [values]} (value[x], resource, or parts as dicts)."""
    out: dict[str, list] = {}
    if body is None:
        return out
    if body.get("resourceType") != "Parameters":
        raise Invalid("An operation body must be a Parameters resource", expression="resourceType")
    for i, param in enumerate(body.get("parameter") or []):
        name = param.get("name")
        if not isinstance(name, str):
            raise Invalid(f"Parameters.parameter[{i}] has no name",
                          expression=f"Parameters.parameter[{i}].name")
        value = next((v for k, v in param.items() if k.startswith("value")), None)
        if value is None and "resource" in param:
            value = param["resource"]
        if value is None and "part" in param:
            value = {p.get("name"): next((v for k, v in p.items() if k.startswith("value")),
                                         p.get("resource")) for p in param["part"]}
        out.setdefault(name, []).append(value)
    return out
