"""Access decisions: who is calling (`Principal`) and what they may do (`AccessPolicy`).

In the spirit of google/fhir-gateway's AccessChecker: one small extension point decides,
narrows and post-checks every FHIR request; the rest of the gateway stays plain.
"""

from fhir_gateway.access.policy import AccessDecision, AccessPolicy, Principal

__all__ = ["AccessDecision", "AccessPolicy", "Principal"]
