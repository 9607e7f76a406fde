#!/usr/bin/env python3
"""Interoperability check of the token server with a client and a verifier nobody here wrote.

    interop.py --issuer URL --ca CAFILE --secret-dir DIR --audience AUD --user USER
               [--token-out PATH] [--expect-fail [--expect-error CODE]]

Run it with the python of tests/token/python-env (authlib, PyJWT with cryptography, requests).

- Discovery (RFC 8414): GET <issuer>/.well-known/oauth-authorization-server, TLS verified with
  CAFILE only. token_endpoint and jwks_uri are taken from that document and from nowhere else;
  its "issuer" must equal URL exactly (RFC 8414 §3.3), and /.well-known/openid-configuration must
  serve the same document.
- Client (authlib's requests OAuth2Session): one client credentials grant (RFC 6749 §4.4) with
  client_secret_basic and one with client_secret_post. Each answer: token_type Bearer, expires_in
  > 0, Cache-Control: no-store (RFC 6749 §5.1).
- Verifier (PyJWT, its PyJWKClient on the jwks_uri): ES256 signature by a published key, iss, aud,
  exp, iat, sub, jti required; header typ at+jwt (RFC 9068 §2.1, compared case-insensitively) and
  alg ES256; sub == USER; client_id == the client id in DIR.
- With --expect-fail, both grants must be refused with an RFC 6749 §5.2 error (CODE, default
  invalid_client); a refusal after client_secret_basic must be a 401 with WWW-Authenticate: Basic
  (§5.2). Nothing is verified then, and --token-out is not written.

DIR holds the client's credentials as files: client-id and client-secret (client_id and
client_secret, the key names of the operator's Secret when it is mounted, are read too). One
trailing newline is ignored.

Output: one JSON line per check ({"check": ..., "ok": true|false, ...}), then a summary line. No
secret and no token is printed: at most a token's jti and its claim names. --token-out PATH gets
the two access tokens, one a line (basic first), mode 0600.

Exit status: 0 when every check passed, 1 when one failed (the failing lines say why), 2 on bad
arguments or an unreadable DIR.
"""

import argparse
import json
import os
import ssl
import sys
import time

try:
    import jwt
    import requests
    from authlib.integrations.requests_client import OAuth2Session
    from authlib.integrations.base_client.errors import OAuthError
except ImportError as e:  # pragma: no cover
    sys.exit(f"interop.py: {e}; run it with the python that tests/token/python-env prints")

TIMEOUT = 15  # seconds, for every HTTP request

results = []

# Discovery requests: TLS verified with CAFILE only, nothing taken from the environment
# (REQUESTS_CA_BUNDLE, proxies, netrc).
http = requests.Session()
http.trust_env = False


def report(check, ok, **fields):
    line = {"check": check, "ok": bool(ok), **fields}
    results.append(line)
    print(json.dumps(line, sort_keys=False), flush=True)
    return ok


def read_credential(directory, names):
    for name in names:
        path = os.path.join(directory, name)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                value = f.read()
            if value.endswith("\n"):
                value = value[:-1]
                if value.endswith("\r"):
                    value = value[:-1]
            return value
    sys.stderr.write(f"interop.py: {directory} has none of {', '.join(names)}\n")
    sys.exit(2)


def discover(issuer, ca):
    """RFC 8414 §3: the metadata document; returns it, or None after reporting why."""
    url = issuer.rstrip("/") + "/.well-known/oauth-authorization-server"
    try:
        resp = http.get(url, verify=ca, timeout=TIMEOUT, headers={"Accept": "application/json"})
    except requests.RequestException as e:
        report("discovery", False, url=url, error=f"{type(e).__name__}: {e}")
        return None
    if resp.status_code != 200:
        report("discovery", False, url=url, status=resp.status_code, error="expected 200")
        return None
    try:
        meta = resp.json()
    except ValueError:
        report("discovery", False, url=url, error="the body is not JSON")
        return None
    if not isinstance(meta, dict):
        report("discovery", False, url=url, error="the body is not a JSON object")
        return None
    problems = []
    # RFC 8414 §3.3: the issuer in the document MUST be identical to the issuer it was asked for.
    if meta.get("issuer") != issuer:
        problems.append(f"issuer is {meta.get('issuer')!r}, expected {issuer!r}")
    for field in ("token_endpoint", "jwks_uri"):
        value = meta.get(field)
        if not isinstance(value, str) or not value.startswith("https://"):
            problems.append(f"{field} is {value!r}, expected an https URL")
    if "client_credentials" not in (meta.get("grant_types_supported") or []):
        problems.append("grant_types_supported lacks client_credentials")
    methods = meta.get("token_endpoint_auth_methods_supported") or []
    for m in ("client_secret_basic", "client_secret_post"):
        if m not in methods:
            problems.append(f"token_endpoint_auth_methods_supported lacks {m}")
    report(
        "discovery",
        not problems,
        url=url,
        token_endpoint=meta.get("token_endpoint"),
        jwks_uri=meta.get("jwks_uri"),
        fields=sorted(meta),
        **({"error": "; ".join(problems)} if problems else {}),
    )
    # The same document at the OpenID Connect location (where the Kubernetes API server looks).
    oidc_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        other = http.get(oidc_url, verify=ca, timeout=TIMEOUT).json()
        same = other == meta
        report("discovery_openid_configuration", same, url=oidc_url,
               **({} if same else {"error": "differs from oauth-authorization-server"}))
    except (requests.RequestException, ValueError) as e:
        report("discovery_openid_configuration", False, url=oidc_url, error=f"{type(e).__name__}: {e}")
    return None if problems else meta


def fetch(method, token_endpoint, client_id, client_secret, ca):
    """One client credentials grant with authlib. Returns (token dict or None, response, error)."""
    seen = {}

    def keep_response(resp):
        seen["resp"] = resp
        return resp

    session = OAuth2Session(
        client_id=client_id, client_secret=client_secret, token_endpoint_auth_method=method
    )
    # Only CAFILE is trusted: no REQUESTS_CA_BUNDLE, proxy or netrc from the environment.
    session.trust_env = False
    session.verify = ca
    session.register_compliance_hook("access_token_response", keep_response)
    try:
        token = session.fetch_token(
            token_endpoint, grant_type="client_credentials", timeout=TIMEOUT, verify=ca
        )
        return dict(token), seen.get("resp"), None
    except OAuthError as e:
        err = {"error": e.error}
        if e.description:
            err["error_description"] = e.description
        return None, seen.get("resp"), err
    except requests.HTTPError as e:
        return None, seen.get("resp"), {"error": f"HTTP {e.response.status_code if e.response is not None else '?'}"}
    except requests.RequestException as e:
        return None, seen.get("resp"), {"error": f"{type(e).__name__}: {e}"}
    finally:
        session.close()


def check_token_response(method, token, resp):
    problems = []
    token_type = token.get("token_type")
    # RFC 6749 §5.1 / §7.1: the token type is case-insensitive.
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        problems.append(f"token_type is {token_type!r}, expected Bearer")
    expires_in = token.get("expires_in")
    if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
        problems.append(f"expires_in is {expires_in!r}, expected a positive integer")
    if not isinstance(token.get("access_token"), str) or not token.get("access_token"):
        problems.append("no access_token")
    cache_control = resp.headers.get("Cache-Control", "") if resp is not None else ""
    if "no-store" not in cache_control.lower():
        problems.append(f"Cache-Control is {cache_control!r}, expected no-store (RFC 6749 §5.1)")
    report(
        f"token_{method}",
        not problems,
        status=resp.status_code if resp is not None else None,
        token_type=token_type,
        expires_in=expires_in,
        response_fields=sorted(token),
        **({"error": "; ".join(problems)} if problems else {}),
    )
    return not problems


def check_refusal(method, token, resp, err, expected_error):
    problems = []
    status = resp.status_code if resp is not None else None
    if token is not None:
        problems.append("a token was issued")
    else:
        if err.get("error") != expected_error:
            problems.append(f"error is {err.get('error')!r}, expected {expected_error!r}")
        if status not in (400, 401):
            problems.append(f"status {status}, expected 400 or 401 (RFC 6749 §5.2)")
        if method == "client_secret_basic" and err.get("error") == "invalid_client":
            challenge = resp.headers.get("WWW-Authenticate", "") if resp is not None else ""
            if status != 401 or not challenge.lower().startswith("basic"):
                problems.append(
                    f"after Basic authentication: status {status}, WWW-Authenticate {challenge!r}; "
                    "expected 401 with WWW-Authenticate: Basic (RFC 6749 §5.2)"
                )
    report(
        f"refused_{method}",
        not problems,
        status=status,
        **({"oauth_error": err.get("error")} if err else {}),
        **({"error_description": err.get("error_description")} if err and err.get("error_description") else {}),
        **({"error": "; ".join(problems)} if problems else {}),
    )


def verify(method, access_token, jwks_client, issuer, audience, user, client_id):
    """PyJWT: signature with a key of the published JWKS, then the claims."""
    check = f"verify_{method}"
    try:
        header = jwt.get_unverified_header(access_token)
    except jwt.PyJWTError as e:
        return report(check, False, error=f"not a JWS: {e}")
    problems = []
    typ = header.get("typ")
    # RFC 9068 §2.1: typ "at+jwt" (media types compare case-insensitively; "application/at+jwt" is
    # the same type, RFC 7515 §4.1.9).
    if not isinstance(typ, str) or typ.lower() not in ("at+jwt", "application/at+jwt"):
        problems.append(f"header typ is {typ!r}, expected at+jwt")
    if header.get("alg") != "ES256":
        problems.append(f"header alg is {header.get('alg')!r}, expected ES256")
    claims = {}
    try:
        signing_key = jwks_client.get_signing_key_from_jwt(access_token)
        claims = jwt.decode(
            access_token,
            signing_key.key,
            algorithms=["ES256"],
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
        )
    except jwt.PyJWTError as e:
        problems.append(f"PyJWT: {type(e).__name__}: {e}")
    if claims:
        if claims.get("sub") != user:
            problems.append(f"sub is {claims.get('sub')!r}, expected {user!r}")
        if claims.get("client_id") != client_id:
            problems.append("client_id differs from the client id in the secret dir")
    fields = {
        "kid": header.get("kid"),
        "typ": typ,
        "alg": header.get("alg"),
        "jti": claims.get("jti"),
        "sub": claims.get("sub"),
        "claims": sorted(claims),
    }
    if isinstance(claims.get("exp"), (int, float)) and isinstance(claims.get("iat"), (int, float)):
        fields["lifetime_s"] = claims["exp"] - claims["iat"]
    return report(check, not problems, **fields, **({"error": "; ".join(problems)} if problems else {}))


def write_tokens(path, tokens):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        os.write(fd, "".join(t + "\n" for t in tokens).encode())
    finally:
        os.close(fd)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--issuer", required=True, help="the issuer URL, exactly as in the tokens' iss")
    ap.add_argument("--ca", required=True, help="PEM file of the CA that signed the server's certificate")
    ap.add_argument("--secret-dir", required=True, help="folder with files client-id and client-secret")
    ap.add_argument("--audience", required=True)
    ap.add_argument("--user", required=True, help="the ApiKey's spec.user: the tokens' sub")
    ap.add_argument("--token-out", help="write the two access tokens here (mode 0600)")
    ap.add_argument("--expect-fail", action="store_true",
                    help="both grants must be refused with an RFC 6749 §5.2 error")
    ap.add_argument("--expect-error", default="invalid_client",
                    help="with --expect-fail: the error code expected (default invalid_client)")
    args = ap.parse_args()

    client_id = read_credential(args.secret_dir, ["client-id", "client_id"])
    client_secret = read_credential(args.secret_dir, ["client-secret", "client_secret"])

    meta = discover(args.issuer, args.ca)
    if meta is not None:
        ctx = ssl.create_default_context(cafile=args.ca)
        jwks_client = jwt.PyJWKClient(meta["jwks_uri"], ssl_context=ctx, timeout=TIMEOUT)
        tokens = []
        for method in ("client_secret_basic", "client_secret_post"):
            started = time.monotonic()
            token, resp, err = fetch(method, meta["token_endpoint"], client_id, client_secret, args.ca)
            if args.expect_fail:
                check_refusal(method, token, resp, err, args.expect_error)
                continue
            if token is None:
                report(f"token_{method}", False,
                       status=resp.status_code if resp is not None else None,
                       seconds=round(time.monotonic() - started, 3), **err)
                continue
            if check_token_response(method, token, resp):
                tokens.append(token["access_token"])
                verify(method, token["access_token"], jwks_client, args.issuer, args.audience,
                       args.user, client_id)
        if args.token_out and not args.expect_fail and len(tokens) == 2:
            write_tokens(args.token_out, tokens)
            report("token_out", True, path=args.token_out, tokens=len(tokens))
        elif args.token_out and not args.expect_fail:
            report("token_out", False, path=args.token_out, error="not written: a token request failed")

    failed = [r["check"] for r in results if not r["ok"]]
    summary = {"check": "summary", "ok": not failed, "passed": len(results) - len(failed),
               "failed": len(failed)}
    if failed:
        summary["failed_checks"] = failed
    print(json.dumps(summary), flush=True)
    if failed:
        sys.stderr.write(f"interop.py: FAILED: {', '.join(failed)} (see the JSON lines above)\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
