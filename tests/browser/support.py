"""What the portal's browser tests share besides fixtures: the browser's settings, the live
portal's handle, the per-page check (axe-core at desktop and phone sizes, and a screenshot in
var/artifacts/portal-*.png) and the patient's whole sign-in."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.smart_support import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
ARTIFACTS = ROOT / "var" / "artifacts"
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
CLIENT_ID = "portal-browser-test"


class LivePortal:
    def __init__(self, url: str, app) -> None:
        self.url, self.app = url, app

    @property
    def store(self):
        return self.app.extensions["portal"].store

    def tokens(self) -> list[str]:
        """Access tokens of the signed-in sessions (to check revocation at the gateway)."""
        return [e.fhir_state["server"]["auth"]["access_token"]
                for e in list(self.store._items.values()) if e.signed_in]


def screenshot(page, path, attempts: int = 3) -> None:
    """A full-page screenshot. Chromium sometimes answers "Unable to capture screenshot" right
    after a viewport change on a loaded machine; that is retried after a moment (the page and
    every assertion about it are unchanged)."""
    from playwright.sync_api import Error

    for attempt in range(attempts):
        try:
            page.screenshot(path=str(path), full_page=True)
            return
        except Error as exc:
            if "Unable to capture screenshot" not in str(exc) or attempt == attempts - 1:
                raise
            page.wait_for_timeout(250)


def check_page(page, name: str) -> None:
    """axe-core at desktop and phone sizes (no serious or critical violation); screenshots."""
    from axe_playwright_python.sync_playwright import Axe

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    axe = Axe()
    try:
        for size, viewport in SIZES.items():
            page.set_viewport_size(viewport)
            screenshot(page, ARTIFACTS / f"portal-{name}-{size}.png")
            violations = axe.run(page).response["violations"]
            bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                   for v in violations if v["impact"] in ("serious", "critical")]
            assert not bad, f"{name} at {size}: {bad}"
    finally:
        page.set_viewport_size(SIZES["desktop"])


def sign_in(page, portal: LivePortal, username: str, patient: str | None = None) -> None:
    """The whole standalone launch as a patient does it: portal button, the gateway's login
    form, its consent page (choosing `patient` where the account has several), back to the
    portal's home."""
    page.goto(f"{portal.url}/signin")
    page.get_by_role("button", name="Sign in with my clinic").click()
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    if patient:
        page.check(f'input[name="patient"][value="{patient}"]')
    page.get_by_role("button", name="Allow").click()
    page.wait_for_url(f"{portal.url}/home")


def menu(page, name: str) -> None:
    """Follow the main menu's link `name` (exactly that link, not a page link that says more)."""
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()
