"""The FHIR R4 REST adapter: any EHR with a FHIR R4 API behind the gateway."""

from adapters.fhir_rest.adapter import FhirRestAdapter
from adapters.fhir_rest.settings import RestSettings

__all__ = ["FhirRestAdapter", "RestSettings"]
