"""The reference patient portal: a SMART app of the gateway that speaks only HTTP to it."""

from portal.app import create_portal
from portal.settings import PortalSettings

__all__ = ["PortalSettings", "create_portal"]
