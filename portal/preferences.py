"""Display preferences kept in the cookie session: larger text and the language."""

from __future__ import annotations

from flask import redirect, request, session, url_for

from portal.blueprint import bp
from portal.messages import LANGUAGES

#: Where a preference change may send the browser back to (never an outside URL).
RETURN_TO = {"home", "record", "prescriptions", "signin_page", "appointments",
             "find_time"}


@bp.post("/preferences")
def preferences():
    """Toggle large text or set the language, then go back to the page it came from."""
    if "large" in request.form:
        session["large"] = request.form["large"] == "on"
    lang = request.form.get("lang")
    if lang in LANGUAGES:
        session["lang"] = lang
    back = request.form.get("back", "")
    return redirect(url_for(f"portal.{back if back in RETURN_TO else 'index'}"))
