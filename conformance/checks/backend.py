"""smart (backend services): the client_credentials grant with a private_key_jwt assertion,
and the assertion rules an authorization server must enforce (SMART Backend Services)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from conformance.checks.smart import config
from conformance.checks.util import expect_status
from conformance.client import json_body
from conformance.context import RunContext
from conformance.model import SMART_SPEC, Fail, Skip, check

BACKEND = f"{SMART_SPEC}/backend-services.html"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _key(ctx: RunContext) -> tuple[Any, str, str | None]:
    """The backend client's private key (a JWK file), its alg and kid."""
    from joserfc.jwk import import_key

    if not ctx.options.backend_client or not ctx.options.backend_key:
        raise Skip("needs --backend-client and --backend-key (a private JWK file)")
    try:
        jwk = json.loads(Path(ctx.options.backend_key).read_text())
        key = import_key(jwk)
    except (OSError, ValueError) as exc:
        raise Skip(f"cannot read --backend-key: {exc}") from None
    alg = jwk.get("alg") or ("ES384" if jwk.get("kty") == "EC" else "RS384")
    return key, alg, jwk.get("kid")


def assertion(ctx: RunContext, *, exp_in: int = 240, aud: str | None = None,
              jti: str | None = None, key: Any = None) -> str:
    from joserfc import jwt

    own, alg, kid = _key(ctx)
    client = ctx.options.backend_client
    now = int(time.time())
    claims = {"iss": client, "sub": client, "aud": aud or config(ctx)["token_endpoint"],
              "exp": now + exp_in, "iat": now, "jti": jti or str(uuid.uuid4())}
    header = {"alg": alg, "typ": "JWT", **({"kid": kid} if kid else {})}
    return jwt.encode(header, claims, key or own, algorithms=[alg])


def _token(ctx: RunContext, signed: str):
    return ctx.http.post(config(ctx)["token_endpoint"], token=None, accept="application/json",
                         data={"grant_type": "client_credentials",
                               "scope": ctx.options.backend_scope,
                               "client_assertion_type": ASSERTION_TYPE,
                               "client_assertion": signed})


@check("smart.backend-token", "smart", f"{BACKEND}#response-1")
def backend_token(ctx: RunContext) -> str | None:
    """A valid private_key_jwt assertion gets a short-lived Bearer token that works"""
    resp = _token(ctx, assertion(ctx))
    expect_status(resp, 200, what="client_credentials with a valid assertion")
    body = json_body(resp) or {}
    if not body.get("access_token") or str(body.get("token_type")).lower() != "bearer":
        raise Fail("the response has no Bearer access_token")
    if not isinstance(body.get("expires_in"), int) or body["expires_in"] > 300:
        raise Fail(f"expires_in is {body.get('expires_in')!r}; backend tokens should live at "
                   "most 300 s")
    resp = ctx.http.get("metadata", token=body["access_token"])
    expect_status(resp, 200, what="a request with the backend token")
    return f"scope {body.get('scope')!r}, {body['expires_in']} s"


@check("smart.backend-assertion-rules", "smart", f"{BACKEND}#authenticating-to-the-token-endpoint")
def backend_rules(ctx: RunContext) -> str | None:
    """Assertions expiring over 5 minutes ahead, for another aud, replayed, or signed with
    another key are refused"""
    from joserfc.jwk import ECKey, RSAKey

    own, alg, _ = _key(ctx)
    stranger = (ECKey.generate_key("P-384") if alg.startswith("ES")
                else RSAKey.generate_key(2048))
    jti = str(uuid.uuid4())
    first = _token(ctx, assertion(ctx, jti=jti))
    expect_status(first, 200, what="the first use of an assertion")
    cases = [("an assertion expiring in 10 minutes", assertion(ctx, exp_in=600)),
             ("an assertion for another aud", assertion(ctx, aud="https://conformance.invalid/"
                                                         "token")),
             ("a replayed jti", assertion(ctx, jti=jti)),
             ("an assertion signed with another key", assertion(ctx, key=stranger))]
    for label, signed in cases:
        resp = _token(ctx, signed)
        if resp.status_code == 200:
            raise Fail(f"{label} got a token")
        expect_status(resp, 400, 401, what=label)
    return f"{len(cases)} bad assertions refused"
