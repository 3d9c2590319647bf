"""What the project knows about real EHR APIs beyond their CapabilityStatements.

A CapabilityStatement describes the server, not what a registered app may do, and vendors leave
things out. Each profile lists interactions known to be unavailable to apps ("Type.interaction",
"Type.*" for the whole type) and says whether a server that serves no CapabilityStatement may be
assumed to offer the standard R4 interactions. Sources: the vendors' published R4
CapabilityStatements and API documentation (see README, "Connecting an EHR").
"""

from __future__ import annotations

from dataclasses import dataclass

WRITES = ("create", "update", "patch", "delete")
BILLING = ("Invoice.*", "PaymentNotice.*", "PaymentReconciliation.*", "Account.*")


def _writes(rtype: str) -> tuple[str, ...]:
    return tuple(f"{rtype}.{i}" for i in WRITES)


@dataclass(frozen=True)
class VendorProfile:
    name: str
    title: str
    deny: tuple[str, ...] = ()
    assume_standard: bool = False  # no CapabilityStatement: assume standard R4 interactions
    # False when the server's transactions ignore `ifMatch` on their entries: then a
    # transaction that needs it runs entry by entry, each PUT with If-Match, undone on failure.
    transaction_if_match: bool = True
    notes: tuple[str, ...] = ()


PROFILES: dict[str, VendorProfile] = {p.name: p for p in (
    VendorProfile(
        "generic", "Any FHIR R4 server", assume_standard=True,
        notes=("Trusts the server's CapabilityStatement as it is.",)),
    VendorProfile(
        "epic", "Epic (R4 API)",
        deny=(*_writes("Appointment"), *_writes("MedicationRequest"), *_writes("Slot"),
              *BILLING, "Task.create", "Task.delete"),
        notes=("Appointment and MedicationRequest are read-only in Epic's R4 API; $find/$book "
               "exist only in an older API.",
               "No Invoice or PaymentNotice; Task update is allowed.")),
    VendorProfile(
        "oracle", "Oracle Health (Cerner Millennium R4)",
        deny=(*_writes("Slot"), *BILLING, "Task.*"),
        notes=("Appointment and MedicationRequest create are allowed.",
               "No Invoice, PaymentNotice or Task.")),
    VendorProfile(
        "hapi", "HAPI FHIR", assume_standard=True,
        notes=("The public test server answers 403 to bearer tokens it does not know: use "
               "auth = none there.",)),
    VendorProfile(
        "medplum", "Medplum", assume_standard=True, transaction_if_match=False,
        notes=("Medplum's FHIR router serves no CapabilityStatement of its own; the standard "
               "R4 interactions are assumed.",
               "Its transactions ignore ifMatch (seen with @medplum/fhir-router 4.5.2: ten "
               "concurrent transactions with the same ifMatch all succeeded), so conditional "
               "transactions run entry by entry with If-Match, which it honours.")),
    VendorProfile(
        "fhir-gateway", "Another fhir-gateway", assume_standard=True),
)}


def profile(name: str) -> VendorProfile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown vendor profile {name!r}; known: "
                         f"{', '.join(sorted(PROFILES))}") from None
