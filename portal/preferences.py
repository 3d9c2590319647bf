"""Display preferences kept in the cookie session: larger text and the language."""

from __future__ import annotations

from flask import current_app, redirect, request, session, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from portal.blueprint import bp
from portal.messages import LANGUAGES

#: Pages a preference change never goes back to: they act on arrival (the SMART callback and
#: launch) or are not pages.
NO_RETURN = {"portal.callback", "portal.launch", "portal.static", "static", "portal.preferences"}


def return_path(back: str) -> str | None:
    """`back` when it is a page of this portal to show again (a local path that a GET view
    answers), else None: never an outside URL."""
    if not back.startswith("/") or back.startswith(("//", "/\\")) or "?" in back:
        return None
    try:
        endpoint, _ = current_app.url_map.bind("localhost").match(back, method="GET")
    except (HTTPException, RequestRedirect):
        return None
    return back if endpoint not in NO_RETURN else None


@bp.post("/preferences")
def preferences():
    """Toggle large text or set the language, then go back to the page it came from."""
    if "large" in request.form:
        session["large"] = request.form["large"] == "on"
    lang = request.form.get("lang")
    if lang in LANGUAGES:
        session["lang"] = lang
    return redirect(return_path(request.form.get("back", "")) or url_for("portal.index"))
