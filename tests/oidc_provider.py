"""A minimal OpenID Connect provider on 127.0.0.1 for the single sign-on test: discovery, an authorize endpoint that
signs in one fixed user at once, a token endpoint that returns an RS256-signed ID token (with the nonce it was given),
and the key set. Real HTTP and real JWTs (joserfc), as an institution's identity provider would send."""

from __future__ import annotations

import secrets
import threading
import time
from contextlib import contextmanager
from urllib.parse import urlencode

CLIENT_ID = "ferpipe-test-client"
CLIENT_SECRET = "ferpipe-test-secret"


@contextmanager
def oidc_provider(port: int, email: str = "ada@lab.example.org", name: str = "Ada Researcher"):
    """Serve the provider on 127.0.0.1:port; yields its issuer URL. ``requests`` (a list) records each call."""
    import uvicorn
    from joserfc import jwt
    from joserfc.jwk import RSAKey
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, RedirectResponse
    from starlette.routing import Route

    issuer = f"http://127.0.0.1:{port}"
    key = RSAKey.generate_key(2048)
    kid = "test-key"
    codes: dict[str, dict] = {}
    calls: list[str] = []

    async def discovery(request: Request):
        calls.append("discovery")
        return JSONResponse({
            "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize", "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks", "response_types_supported": ["code"], "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"], "scopes_supported": ["openid", "email", "profile"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })  # fmt: skip

    async def authorize(request: Request):
        calls.append("authorize")
        q = request.query_params
        if q.get("client_id") != CLIENT_ID:
            return JSONResponse({"error": "unauthorized_client"}, status_code=400)
        code = secrets.token_urlsafe(16)
        codes[code] = {"nonce": q.get("nonce"), "redirect_uri": q.get("redirect_uri")}
        return RedirectResponse(f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}", 302)

    async def token(request: Request):
        calls.append("token")
        form = await request.form()
        grant = codes.pop(form.get("code", ""), None)
        if grant is None:
            return JSONResponse({"error": "invalid_grant"}, status_code=400)
        now = int(time.time())
        claims = {"iss": issuer, "sub": "ada-1", "aud": CLIENT_ID, "iat": now, "exp": now + 600, "email": email,
                  "email_verified": True, "name": name}  # fmt: skip
        if grant["nonce"]:
            claims["nonce"] = grant["nonce"]
        id_token = jwt.encode({"alg": "RS256", "kid": kid}, claims, key)
        return JSONResponse({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer", "expires_in": 600,
                             "id_token": id_token, "scope": "openid email profile"})  # fmt: skip

    async def jwks(request: Request):
        calls.append("jwks")
        public = key.as_dict(private=False)
        public.update(kid=kid, use="sig", alg="RS256")
        return JSONResponse({"keys": [public]})

    app = Starlette(routes=[Route("/.well-known/openid-configuration", discovery), Route("/authorize", authorize),
                            Route("/token", token, methods=["POST"]), Route("/jwks", jwks)])  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the test identity provider did not start"
        time.sleep(0.05)
    try:
        yield issuer, calls
    finally:
        server.should_exit = True
        thread.join(timeout=10)
