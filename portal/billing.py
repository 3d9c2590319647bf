"""Billing: statements (accounts, bills with their lines, payments), paying a bill with a card
(the server's `Invoice/{id}/$pay`), the receipt, and a printable statement.

Everything is read with the patient's token (`Account`, `Invoice`, `PaymentNotice`,
`PaymentReconciliation`), so another patient's bill looks missing. The pay form is checked here
first (`portal.bills`, the rules `$pay` applies), so bad input never reaches the server. Its
one-time form id (`portal.forms`) is also the `Idempotency-Key` of the payment: a repeat of the
same call (a token refresh, a timeout) is charged once by the server, and a second submit of the
same form is stopped here. Card data is sent once in the POST body to the server and is never
logged, kept, put in a URL or shown again (only the last four digits, from the receipt).
"""

from __future__ import annotations

import logging
import time
from datetime import date
from decimal import Decimal

import httpx
from flask import abort, redirect, render_template, request, session, url_for

from portal import bills
from portal.blueprint import api, bp, current, patient_id, signed_in, t
from portal.fhir_api import HIDDEN, GatewayError, valid_id
from portal.forms import MAX_OPEN_FORMS, new_form_id, use_form_id

log = logging.getLogger("portal.billing")
#: $pay's OperationOutcome expression -> the form field it is about
EXPRESSION_FIELD = {"amount": "amount", "card-number": "card_number",
                    "card-expiry": "card_expiry", "card-holder": "card_holder"}
DOUBLE_SUBMIT_WAIT = 10.0  # seconds a second submit waits for the first one's receipt


def _search(rtype: str, params: dict) -> list[dict]:
    return [r for r in api().search(rtype, params) if r.get("resourceType") == rtype]


def _payments_for(invoices: list[dict]) -> tuple[list[dict], list[dict]]:
    """(PaymentNotices against these invoices, their receipts)."""
    ids = [i["id"] for i in invoices if i.get("id")]
    if not ids:
        return [], []
    notices = _search("PaymentNotice", {"request": ",".join(f"Invoice/{i}" for i in ids),
                                        "_count": "200"})
    receipt_ids = sorted({bills.ref_id(n.get("payment"), "PaymentReconciliation")
                          for n in notices} - {""})
    receipts = _search("PaymentReconciliation", {"_id": ",".join(receipt_ids),
                                                 "_count": "200"}) if receipt_ids else []
    return notices, receipts


def _statements(account_id: str | None = None) -> list[bills.Statement]:
    if account_id is None:
        accounts = _search("Account", {"patient": patient_id()})
        invoices = _search("Invoice", {"patient": patient_id(), "_count": "200"})
    else:
        accounts = [api().read("Account", account_id)]
        invoices = _search("Invoice", {"account": f"Account/{account_id}", "_count": "200"})
    notices, receipts = _payments_for(invoices)
    return bills.statements(accounts, invoices, notices, receipts)


@bp.get("/billing")
@signed_in
def billing():
    notice = session.pop("bill_notice", None)
    return render_template("billing.html", statements=_statements(), b=bills, notice=notice)


@bp.get("/billing/statement/<account_id>")
@signed_in
def statement(account_id: str):
    """The printable statement of one account (the portal's own page: translated, and the
    same strict CSP as every page; print styles hide the menu)."""
    if not valid_id(account_id):
        abort(404)
    try:
        (found,) = _statements(account_id)
    except GatewayError as exc:
        if exc.status in HIDDEN:
            abort(404)
        raise
    return render_template("billing_statement.html", s=found, b=bills,
                           today=date.today().isoformat())


# -- paying -------------------------------------------------------------------------------

def _open_bill(invoice_id: str) -> tuple[bills.Bill, Decimal | None] | None:
    """The bill and its account's balance, or None when the patient has no such bill."""
    try:
        invoice = api().read("Invoice", invoice_id)
        account_id = bills.ref_id(invoice.get("account"), "Account")
        account = api().read("Account", account_id) if account_id else {"id": ""}
    except GatewayError as exc:
        if exc.status in HIDDEN:
            return None
        raise
    notices, _ = _payments_for([invoice])
    (found,) = bills.statements([account], [invoice], notices, [])
    return found.bills[0], found.balance


def _pay_page(invoice_id: str, errors: dict[str, str] | None = None,
              values: dict[str, str] | None = None, status: int = 200, receipt: str = ""):
    opened = _open_bill(invoice_id)
    if opened is None:
        return render_template("error.html", message=t("bill.err_unknown")), 404
    found, balance = opened
    most = bills.most_payable(found, balance)
    values = dict(values or {})
    values.setdefault("amount", bills.plain(most) if most > 0 else "")
    return render_template(
        "billing_pay.html", bill=found, b=bills, most=most, balance=balance,
        errors=errors or {}, values=values, receipt=receipt,
        form_id=new_form_id() if found.can_pay else ""), status


@bp.get("/billing/pay/<invoice_id>")
@signed_in
def pay_page(invoice_id: str):
    if not valid_id(invoice_id):
        abort(404)
    return _pay_page(invoice_id)


def _say(problem: bills.Problem) -> str:
    key, values = problem
    return t(key, **values)


def _paid_forms() -> dict[str, str]:
    """form id -> receipt id ('' while the payment is being made) of this session's last
    MAX_OPEN_FORMS payments."""
    forms: dict[str, str] = current().data.setdefault("paid_forms", {})
    for old in list(forms)[:-MAX_OPEN_FORMS]:
        forms.pop(old, None)
    return forms


def _receipt_of(fid: str) -> str:
    """The receipt of a form already sent in this session (waiting for it while the first
    submit is still at the server), '' when there is none."""
    deadline = time.monotonic() + DOUBLE_SUBMIT_WAIT
    while True:
        receipt = _paid_forms().get(fid)
        if receipt or receipt is None or time.monotonic() > deadline:
            return receipt or ""
        time.sleep(0.1)


def _refusal(exc: GatewayError) -> tuple[str, str]:
    """(field or '_form', message) for a refusal of `$pay`, in the patient's words."""
    if exc.status == 409:  # payments at once on the account: nothing was paid, try again
        return "_form", t("bill.refused.busy")
    field = EXPRESSION_FIELD.get(exc.expression)
    if field:
        return field, t(f"bill.refused.{field}")
    if exc.expression == "Invoice.status":
        return "_form", t("bill.refused.status")
    return "_form", t("bill.err_refused", reason=exc.text)


@bp.post("/billing/pay")
@signed_in
def pay():
    """Pay one bill. Every field is checked before the server is called; any error is shown
    next to its field and the card fields are left empty."""
    form = request.form
    invoice_id = form.get("invoice", "")
    if not valid_id(invoice_id):
        return render_template("error.html", message=t("bill.err_unknown")), 404
    kept = {"amount": form.get("amount", "")[:bills.MAX_AMOUNT_CHARS * 2]}  # no card fields
    fid = form.get("form_id", "")
    if not use_form_id(fid):
        receipt = _receipt_of(fid) if fid else ""
        return _pay_page(invoice_id, {"_submit": t("bill.err_twice_paid") if receipt
                                      else t("bill.err_twice")}, kept, 409, receipt=receipt)
    paid = _paid_forms()
    paid[fid] = ""  # being paid: a second submit of this form waits for the receipt
    rid = None
    try:
        rid = _pay(invoice_id, fid, form, kept)
    finally:
        if isinstance(rid, str) and rid:
            paid[fid] = rid
        else:  # nothing was paid: a second submit is told so at once
            paid.pop(fid, None)
    if not isinstance(rid, str):
        return rid  # the page with what was wrong
    session["bill_notice"] = "bill.paid"
    if not rid:  # a server that answers without the receipt: the payments list has it
        return redirect(url_for("portal.billing"), code=303)
    return redirect(url_for("portal.receipt", receipt_id=rid), code=303)


def _pay(invoice_id: str, fid: str, form, kept: dict[str, str]):
    """The receipt id of the payment, or the response to show when none was made."""
    opened = _open_bill(invoice_id)
    if opened is None:
        return render_template("error.html", message=t("bill.err_unknown")), 404
    found, balance = opened
    if not found.can_pay:
        return _pay_page(invoice_id, status=422)
    most = bills.most_payable(found, balance)
    errors: dict[str, str] = {}
    amount, problem = bills.check_amount(form.get("amount", ""), most)
    if problem:
        errors["amount"] = _say(problem)
    number, problem = bills.check_card_number(form.get("card_number", ""))
    if problem:
        errors["card_number"] = _say(problem)
    expiry, problem = bills.check_expiry(form.get("card_expiry", ""), date.today())
    if problem:
        errors["card_expiry"] = _say(problem)
    holder, problem = bills.check_holder(form.get("card_holder", ""))
    if problem:
        errors["card_holder"] = _say(problem)
    if errors:
        return _pay_page(invoice_id, errors, kept, 400)
    params = [
        {"name": "amount", "valueMoney": {"value": float(amount), "currency": bills.CURRENCY}},
        {"name": "card-number", "valueString": number},
        {"name": "card-expiry", "valueString": expiry},
        {"name": "card-holder", "valueString": holder},
    ]
    path = f"Invoice/{invoice_id}/$pay"
    try:
        try:
            _, receipt = api().post_operation(path, params, {"Idempotency-Key": fid})
        except httpx.TimeoutException:  # safe to repeat: the key makes the server charge once
            _, receipt = api().post_operation(path, params, {"Idempotency-Key": fid})
    except GatewayError as exc:
        log.info("payment refused: %s", exc.status)  # the status only, never the form
        if exc.status in HIDDEN:
            return render_template("error.html", message=t("bill.err_unknown")), 404
        if 400 <= exc.status < 500:
            where, message = _refusal(exc)
            return _pay_page(invoice_id, {where: message}, kept, 422)
        raise
    _remember_receipt(receipt)
    return receipt.get("id", "")


MAX_REMEMBERED_RECEIPTS = 10


def _remember_receipt(receipt: dict) -> None:
    """Keep the receipt `$pay` answered with (server-side session, the last few): where the
    gateway keeps payments in its own ledger the EHR cannot be asked for it again."""
    if receipt.get("resourceType") != "PaymentReconciliation" or not valid_id(receipt.get("id")):
        return
    kept: dict = current().data.setdefault("receipts", {})
    kept[receipt["id"]] = receipt
    for old in list(kept)[:-MAX_REMEMBERED_RECEIPTS]:
        del kept[old]


@bp.get("/billing/receipt/<receipt_id>")
@signed_in
def receipt(receipt_id: str):
    """A payment's receipt (the stored PaymentReconciliation) and the balance now."""
    found = api().read_or_none("PaymentReconciliation", receipt_id)
    remembered = found is None
    if remembered:  # not at the EHR (a gateway ledger's payment): this session's own answer
        found = current().data.get("receipts", {}).get(receipt_id)
        if found is None:
            abort(404)
    paid = bills.payment(found)
    invoice = api().read_or_none("Invoice", paid.invoice_id) if paid.invoice_id else None
    if invoice is None and not remembered:
        abort(404)
    account_id = bills.ref_id((invoice or {}).get("account"), "Account")
    balance = None
    if account_id and not remembered:  # the EHR's balance would not show a ledger payment
        balance = bills.account_balance(api().read("Account", account_id))
    notice = session.pop("bill_notice", None)
    return render_template("billing_receipt.html", p=paid, b=bills, balance=balance,
                           account_id=account_id, notice=notice), 200
