"""portal checks (see the module docstring of conformance.checks)."""
