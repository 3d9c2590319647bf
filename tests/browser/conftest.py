"""Fixtures of the portal's browser tests: Debian's chromium through Playwright (module-scoped),
a real gateway with SMART on and seeded patients (`env`), the real portal on its own loopback
port (`portal`), and a fresh browser context per test (`page`). Each test module gets its own
gateway and portal. Skips with the reason where chromium or Playwright is missing;
GATEWAY_REQUIRE_BROWSER=1 (CI) makes that a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from portal import PortalSettings, create_portal
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, CLIENT_ID, SIZES, LivePortal
from tests.conftest import free_port, make_smart_env, skip_or_fail


@pytest.fixture(scope="module")
def playwright_browser():
    if not Path(CHROMIUM).exists():
        skip_or_fail("GATEWAY_REQUIRE_BROWSER", f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        import axe_playwright_python  # noqa: F401
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        skip_or_fail("GATEWAY_REQUIRE_BROWSER", f"{exc.name} is not installed")
    home = tempfile.mkdtemp(prefix="chromium-home-")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                    env={**os.environ, "HOME": home})
        yield browser
        browser.close()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from make_smart_env(tmp_path_factory, "embedded")


@pytest.fixture(scope="module")
def portal(env, playwright_browser):
    from werkzeug.serving import make_server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env.smart.clients.add(CLIENT_ID, "public", redirect_uris=[f"{url}/callback"],
                          launch_uri=f"{url}/launch", name="Portal under test")
    app = create_portal(PortalSettings(fhir_base=env.base, client_id=CLIENT_ID,
                                       redirect_uri=f"{url}/callback",
                                       secret_key="browser-test-secret"))
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield LivePortal(url, app)
    server.shutdown()
    thread.join(5)


@pytest.fixture
def page(playwright_browser, portal):
    context = playwright_browser.new_context(viewport=SIZES["desktop"])
    urls: list[str] = []
    page = context.new_page()
    page.on("request", lambda req: urls.append(req.url))
    page.requested_urls = urls
    yield page
    context.close()
