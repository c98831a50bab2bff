"""Forged tokens for the authorizer tests.

moto signs every IdToken with one fixed RSA key that ships inside the package
(moto/cognitoidp/resources/jwks-private.json, kid `dummy`). Signing with that key lets a test build a token
that is valid in every respect but one (expired, wrong issuer, wrong token_use, wrong audience), so each
check of the verifier is proven on its own. A control token re-signed with the same key must be accepted.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from moto.utilities.utils import load_resource

MOTO_KID = "dummy"


def moto_private_key():
    jwk = load_resource("cognitoidp/resources/jwks-private.json")
    return RSAAlgorithm.from_jwk(json.dumps(jwk))


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def sign_rs256(claims: dict, key=None, kid: str = MOTO_KID) -> str:
    return jwt.encode(claims, key or moto_private_key(), algorithm="RS256", headers={"kid": kid})


def other_rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(header: dict, claims: dict) -> str:
    compact = lambda value: json.dumps(value, separators=(",", ":")).encode()  # noqa: E731
    return f"{_b64(compact(header))}.{_b64(compact(claims))}"


def unsigned(claims: dict) -> str:
    """`alg: none` with an empty signature."""
    return _segments({"alg": "none", "typ": "JWT", "kid": MOTO_KID}, claims) + "."


def hs256_with_public_key(claims: dict) -> str:
    """The algorithm-confusion attack: HS256 keyed with the RSA public key (PEM), which the attacker knows.
    Built by hand because pyjwt refuses to use a PEM public key as an HMAC secret."""
    public_pem = moto_private_key().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _segments({"alg": "HS256", "typ": "JWT", "kid": MOTO_KID}, claims)
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def tampered(token: str, **changes) -> str:
    """The real token with its payload changed and its original signature kept."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    new_payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{new_payload}.{signature}"


def sign_raw(header_json: str, payload_json: str, key=None) -> str:
    """RS256 over JSON text given as is, so a test can send what pyjwt would never write: a repeated key
    in the payload or the header, or a `crit` header."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signing_input = f"{_b64(header_json.encode())}.{_b64(payload_json.encode())}"
    signature = (key or moto_private_key()).sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def with_claims_json(claims: dict, extra_members: str = "", header: dict | None = None) -> str:
    """The claims as compact JSON with `extra_members` (e.g. `"custom:tenant_id":"x"`) appended verbatim
    to the object, signed with moto's key."""
    payload = json.dumps(claims, separators=(",", ":"))
    if extra_members:
        payload = payload[:-1] + "," + extra_members + "}"
    return sign_raw(json.dumps(header or {"alg": "RS256", "typ": "JWT", "kid": MOTO_KID}, separators=(",", ":")), payload)
