"""The checks, one module per group; importing this package registers them all."""

from conformance.checks import (  # noqa: F401
    access,
    backend,
    capability,
    http,
    portal,
    read,
    search,
    smart,
    validity,
    write,
)
