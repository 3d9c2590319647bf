"""What every portal form shares: a one-time form id against double submits.

Each rendered form carries a fresh `form_id` remembered in the server-side session; the first
submit uses it up, so a second submit of the same form (double click, back and resend) changes
nothing and the page says so.
"""

from __future__ import annotations

import secrets

from portal.blueprint import current

MAX_OPEN_FORMS = 50


def new_form_id() -> str:
    """A new one-time id for a form, remembered in the server-side session."""
    forms: list[str] = current().data.setdefault("forms", [])
    fid = secrets.token_urlsafe(16)
    forms.append(fid)
    del forms[:-MAX_OPEN_FORMS]
    return fid


def use_form_id(fid: str) -> bool:
    """True the first time a form id is used, False after (or for an unknown id)."""
    forms: list[str] = current().data.setdefault("forms", [])
    try:
        forms.remove(fid)  # one atomic step: of two simultaneous submits only one wins
    except ValueError:
        return False
    return True
