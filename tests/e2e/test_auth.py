"""The Cognito authorizer of the local API: only a valid IdToken of this pool and app client gets through,
and only a user bound to a tenant may chat.

Tokens re-signed with moto's own key (see tokens.py) change one claim at a time; the control case proves a
re-signed token is otherwise accepted, so each 401 below is caused by the one claim it changes.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest

import tokens
from provision import create_app_client
from support import assert_error_body, chat, fake_reply, new_tenant_id, request_id_of

PROMPT = "auth check"


@pytest.fixture(scope="module")
def alice(user_factory):
    return user_factory.create(new_tenant_id("auth"), prefix="alice")


@pytest.fixture(scope="module")
def claims(alice) -> dict:
    return tokens.claims_of(alice.token)


def _now() -> int:
    return int(time.time())


def test_the_real_id_token_is_accepted(api_url, alice):
    response = chat(api_url, alice.token, {"prompt": PROMPT})
    assert response.status_code == 200, response.text
    assert response.json() == {"response": fake_reply(PROMPT)}


def test_a_token_re_signed_with_moto_key_is_accepted(api_url, claims):
    """Control: without this, the forged-claim cases below would prove nothing."""
    response = chat(api_url, tokens.sign_rs256(dict(claims)), {"prompt": PROMPT})
    assert response.status_code == 200, response.text


UNAUTHENTICATED = {
    "no authorization header": lambda c, u, r: None,
    "empty bearer": lambda c, u, r: "",
    "garbage token": lambda c, u, r: "not-a-jwt",
    "three garbage segments": lambda c, u, r: "abc.def.ghi",
    "expired": lambda c, u, r: tokens.sign_rs256({**c, "iat": _now() - 7200, "auth_time": _now() - 7200, "exp": _now() - 3600}),
    "expired a minute ago": lambda c, u, r: tokens.sign_rs256({**c, "exp": _now() - 60}),
    "wrong issuer": lambda c, u, r: tokens.sign_rs256({**c, "iss": c["iss"].rsplit("/", 1)[0] + "/us-east-1_other"}),
    "access token_use": lambda c, u, r: tokens.sign_rs256({**c, "token_use": "access"}),
    "wrong audience (forged)": lambda c, u, r: tokens.sign_rs256({**c, "aud": "someone-elses-client"}),
    "no exp": lambda c, u, r: tokens.sign_rs256({k: v for k, v in c.items() if k != "exp"}),
    "unknown kid": lambda c, u, r: tokens.sign_rs256(dict(c), kid="not-in-jwks"),
    "signed by another key": lambda c, u, r: tokens.sign_rs256(dict(c), key=tokens.other_rsa_key()),
    "alg none": lambda c, u, r: tokens.unsigned(dict(c)),
    "HS256 keyed with the public key": lambda c, u, r: tokens.hs256_with_public_key(dict(c)),
    "tenant claim tampered": lambda c, u, r: tokens.tampered(u.token, **{"custom:tenant_id": "victim-tenant"}),
    "real access token": lambda c, u, r: r["access_token"],
    "real token of another app client": lambda c, u, r: r["other_client_id_token"],
}


@pytest.fixture(scope="module")
def real_tokens(resources, user_factory, alice):
    other_client = create_app_client(user_factory.users.cognito, resources.user_pool_id, f"other-{uuid.uuid4().hex[:6]}")
    result = user_factory.users.authenticate(alice.username, alice.password)
    return {
        "access_token": result["AccessToken"],
        "other_client_id_token": user_factory.users.get_id_token(alice.username, alice.password, client_id=other_client),
    }


NOT_ACCEPTED = "Unauthorized: the token was not accepted"


@pytest.mark.parametrize("case", list(UNAUTHENTICATED))
def test_invalid_tokens_get_401(api_url, alice, claims, real_tokens, case):
    token = UNAUTHENTICATED[case](claims, alice, real_tokens)

    response = chat(api_url, token, {"prompt": PROMPT})

    error = assert_error_body(response, 401)
    assert error == {"type": "authentication_error", "message": NOT_ACCEPTED}, "a 401 names no failing check"
    assert len(request_id_of(response)) >= 16, "a 401 carries the x-request-id an operator looks for in the log"


ODD_CLAIMS = {
    # A validly signed token (moto's key) whose tenant claim is not a string: never converted into a tenant.
    "null tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": None}),
    "number tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": 1e3}),
    "integer tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": 1000}),
    "array tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": [c["custom:tenant_id"]]}),
    "bool tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": True}),
    "object tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": {"id": c["custom:tenant_id"]}}),
    "whitespace tenant": lambda c: tokens.sign_rs256({**c, "custom:tenant_id": c["custom:tenant_id"] + " "}),
    "number sub": lambda c: tokens.sign_rs256({**c, "sub": 42}),
    "groups as a string": lambda c: tokens.sign_rs256({**c, "cognito:groups": "admin"}),
    "duplicated tenant claim": lambda c: tokens.with_claims_json(c, '"custom:tenant_id":"victim-tenant"'),
    "duplicated sub": lambda c: tokens.with_claims_json(c, '"sub":"someone-else"'),
    "duplicated header member": lambda c: tokens.sign_raw(
        '{"alg":"RS256","kid":"dummy","kid":"dummy"}', json.dumps(c, separators=(",", ":"))
    ),
    "iat ten minutes ahead": lambda c: tokens.sign_rs256({**c, "iat": _now() + 600}),
    "iat six minutes ahead": lambda c: tokens.sign_rs256({**c, "iat": _now() + 360}),
    "crit header": lambda c: tokens.with_claims_json(c, header={"alg": "RS256", "kid": "dummy", "crit": ["exp"]}),
    "empty crit header": lambda c: tokens.with_claims_json(c, header={"alg": "RS256", "kid": "dummy", "crit": []}),
}


@pytest.mark.parametrize("case", list(ODD_CLAIMS))
def test_validly_signed_tokens_with_odd_claims_are_refused(api_url, claims, case):
    response = chat(api_url, ODD_CLAIMS[case](dict(claims)), {"prompt": PROMPT})

    assert response.status_code in (401, 403), f"{case}: {response.status_code} {response.text}"
    error = assert_error_body(response, response.status_code)
    assert "victim" not in response.text and "someone-else" not in response.text
    if response.status_code == 401:
        assert error["message"] == NOT_ACCEPTED


def test_odd_claim_controls_are_accepted(api_url, claims):
    """Controls for the cases above: the raw signer, a slightly early iat and a repeated-looking but distinct
    claim are all fine, so each refusal above comes from the one thing its case changes."""
    for token in (
        tokens.with_claims_json(dict(claims)),
        tokens.with_claims_json(dict(claims), '"custom:other":"x"'),
        tokens.sign_rs256({**claims, "iat": _now() + 60}),
    ):
        response = chat(api_url, token, {"prompt": PROMPT})
        assert response.status_code == 200, response.text


def test_other_schemes_get_401(api_url, alice):
    response = chat(api_url, None, {"prompt": PROMPT}, headers={"Authorization": f"Basic {alice.token}"})
    assert_error_body(response, 401)


def test_a_cached_token_is_refused_after_its_exp_and_a_tampered_one_is_verified(api_url, claims):
    """The authorizer caches what it verified, keyed by the whole token (README "Identity: exact claims"): the
    cache never outlives a token's exp, and a token changed in one claim is another key, verified in full."""
    # GIVEN a token valid for a few more seconds, accepted (so cached)
    expires_at = _now() + 3
    token = tokens.sign_rs256({**claims, "exp": expires_at})
    accepted = chat(api_url, token, {"prompt": PROMPT})
    assert accepted.status_code == 200, accepted.text
    # WHEN the same token with its tenant changed comes while the original is cached
    # THEN it is refused (its signature no longer matches)
    tampered = chat(api_url, tokens.tampered(token, **{"custom:tenant_id": "victim-tenant"}), {"prompt": PROMPT})
    assert_error_body(tampered, 401)
    # WHEN the cached token comes back after its exp
    time.sleep(max(0.0, expires_at - time.time()) + 1.1)
    expired = chat(api_url, token, {"prompt": PROMPT})
    # THEN it is refused like any expired token
    error = assert_error_body(expired, 401)
    assert error["message"] == NOT_ACCEPTED


def test_a_user_without_tenant_gets_403(api_url, user_factory):
    orphan = user_factory.create(None, prefix="orphan")
    assert "custom:tenant_id" not in tokens.claims_of(orphan.token)

    response = chat(api_url, orphan.token, {"prompt": PROMPT})

    assert_error_body(response, 403)
    assert len(request_id_of(response)) >= 16, "a 403 carries the x-request-id an operator looks for in the log"


class RotatingJwks:
    """The user pool's JWKS as a local server whose key set the test changes (a key rotation), counting the
    authorizer's fetches."""

    def __init__(self) -> None:
        import http.server
        import threading

        self.keys: list[dict] = []
        self.fetches = 0
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                owner.fetches += 1
                body = json.dumps({"keys": owner.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/pool/.well-known/jwks.json"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def public_jwk(private_key, kid: str) -> dict:
        from jwt.algorithms import RSAAlgorithm

        return {**json.loads(RSAAlgorithm.to_jwk(private_key.public_key())), "kid": kid, "alg": "RS256", "use": "sig"}

    def close(self) -> None:
        self.server.shutdown()


def test_an_unknown_kid_refreshes_the_keys_at_most_once_per_interval(stack, claims):
    # GIVEN an API whose user pool publishes key "old", and a token of that key accepted (first fetch)
    jwks = RotatingJwks()
    try:
        old_key, new_key = tokens.other_rsa_key(), tokens.other_rsa_key()
        jwks.keys = [jwks.public_jwk(old_key, "old")]
        api = stack.start_api("api-jwks-rotation", COGNITO_JWKS_URL=jwks.url)
        first = chat(api.url, tokens.sign_rs256(dict(claims), key=old_key, kid="old"), {"prompt": PROMPT})
        assert first.status_code == 200, first.text
        assert jwks.fetches == 1
        # WHEN the pool rotates to key "new" and, past the refresh interval (10 s), a token of it arrives
        jwks.keys = [jwks.public_jwk(old_key, "old"), jwks.public_jwk(new_key, "new")]
        time.sleep(10.5)
        rotated = chat(api.url, tokens.sign_rs256(dict(claims), key=new_key, kid="new"), {"prompt": PROMPT})
        # THEN the keys are fetched again and the token is accepted
        assert rotated.status_code == 200, rotated.text
        assert jwks.fetches == 2
        # AND an unknown kid right after does not fetch again (no refetch storm from forged kids)
        forged = chat(api.url, tokens.sign_rs256(dict(claims), key=new_key, kid="forged"), {"prompt": PROMPT})
        assert_error_body(forged, 401)
        assert jwks.fetches == 2
    finally:
        jwks.close()
