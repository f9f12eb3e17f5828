"""Who may reach what.

- **Researchers** sign in with a local account (``ferpipe users add``: bcrypt hashes in the database) and get a
  signed session cookie that expires. On 127.0.0.1 with no account the dashboard stays open to its one local user;
  bound to any other address it refuses to start until an account exists.
- **Respondents** get a signed link per respondent: an HMAC-SHA256 over the stimulus, the respondent, the expiry and a
  nonce, under a secret stored beside the database (``<db>.secret``, mode 0600). The link allows the camera check, that
  stimulus's video and its number of uploads (one by default) for that stimulus and respondent; everything else about
  the upload (settings, tags, title) is the server's.
- **Hosts**: the server answers only to 127.0.0.1, localhost and the names in ``FERPIPE_PUBLIC_HOSTS``, so a web page
  whose name resolves to 127.0.0.1 (DNS rebinding) cannot read it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import FerpipeError

log = logging.getLogger(__name__)
log.addHandler(logging.NullHandler())

SESSION_COOKIE = "ferpipe_session"
SESSION_TTL_S = 12 * 3600.0
LINK_TTL_S = 7 * 24 * 3600.0
PUBLIC_HOSTS_ENV = "FERPIPE_PUBLIC_HOSTS"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")


class AccessError(FerpipeError):
    """A link or session that does not allow what was asked; ``reason`` is invalid, expired, used or forbidden."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ---- the server secret ---------------------------------------------------------------------------------------------
def secret_path(db_path: str | os.PathLike) -> Path:
    return Path(str(db_path) + ".secret")


def server_secret(db_path: str | os.PathLike) -> bytes:
    """The secret that signs links and sessions: 32 random bytes in ``<db>.secret`` (made once, mode 0600)."""
    path = secret_path(db_path)
    try:
        data = path.read_bytes()
        if len(data) >= 32:
            return data
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".secret.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    try:
        os.link(tmp, path)  # first writer wins; a concurrent one reads the winner's secret
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, payload: dict) -> str:
    """A token: the payload as base64url JSON, a dot, its HMAC-SHA256."""
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return body + "." + _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def unsign(secret: bytes, token: str) -> dict:
    """The payload of a token signed with this secret; AccessError("invalid") for anything else."""
    if not isinstance(token, str) or token.count(".") != 1 or len(token) > 2048:
        raise AccessError("invalid", "this link is not valid")
    body, sig = token.split(".")
    want = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(want, sig):
        raise AccessError("invalid", "this link is not valid")
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        raise AccessError("invalid", "this link is not valid") from None
    if not isinstance(payload, dict):
        raise AccessError("invalid", "this link is not valid")
    return payload


# ---- researcher accounts and sessions -------------------------------------------------------------------------------
def hash_password(password: str) -> str:
    import bcrypt

    if not isinstance(password, str) or len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    if len(password.encode()) > 72:
        raise ValueError("a password can have at most 72 bytes (bcrypt's limit)")
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def check_password(password: str, pw_hash: str | None) -> bool:
    import bcrypt

    if not pw_hash or not isinstance(password, str) or len(password.encode()) > 72:
        return False
    try:
        return bcrypt.checkpw(password.encode(), pw_hash.encode())
    except ValueError:
        return False


def check_user_name(name: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(ch.isalnum() or ch in "._-@" for ch in name):
        raise ValueError(f"a user name is 1-64 letters, digits or . _ - @, got {name!r}")
    return name


def add_user(store, name: str, password: str) -> None:
    store.add_user(check_user_name(name), hash_password(password))
    store.audit("user added", detail=name)


def sign_in(store, db_path, name: str, password: str) -> str | None:
    """A session cookie value for a right name and password, else None (either way, in the audit log)."""
    ok = check_password(password, store.user_hash((name or "").strip()))
    store.audit("sign-in" if ok else "sign-in refused", who=(name or "")[:64])
    if not ok:
        return None
    return sign(server_secret(db_path), {"k": "session", "u": name.strip(), "exp": time.time() + SESSION_TTL_S})


def session_user(db_path, cookie: str | None) -> str | None:
    """The signed-in researcher of a session cookie, or None (missing, forged or expired)."""
    if not cookie:
        return None
    try:
        payload = unsign(server_secret(db_path), cookie)
    except AccessError:
        return None
    if payload.get("k") != "session" or not isinstance(payload.get("exp"), int | float) or payload["exp"] < time.time():
        return None
    return str(payload.get("u") or "") or None


def signin_configured(store) -> bool:
    return store.users().height > 0


def is_loopback(address: str) -> bool:
    if address in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


# ---- single sign-on (Streamlit's OIDC login) -------------------------------------------------------------------------
SSO_KEYS = ("redirect_uri", "cookie_secret")
SSO_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")


def sso_secrets() -> Path | None:
    """The secrets file with the [auth] section for Streamlit's OIDC login ($FERPIPE_SSO_SECRETS), checked: a
    one-line ValueError says what is missing."""
    raw = os.environ.get("FERPIPE_SSO_SECRETS", "").strip()
    if not raw:
        return None
    import tomllib

    path = Path(raw).expanduser()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"FERPIPE_SSO_SECRETS: no such file {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"FERPIPE_SSO_SECRETS: {path} is not a readable TOML file ({exc})") from None
    auth = data.get("auth")
    if not isinstance(auth, dict):
        raise ValueError(f"FERPIPE_SSO_SECRETS: {path} has no [auth] section (see the README, 'Sign-in')")
    missing = [k for k in SSO_KEYS if not auth.get(k)]
    providers = [v for v in auth.values() if isinstance(v, dict)]
    flat = all(auth.get(k) for k in SSO_PROVIDER_KEYS)
    if not flat and not any(all(p.get(k) for k in SSO_PROVIDER_KEYS) for p in providers):
        missing += [k for k in SSO_PROVIDER_KEYS if not auth.get(k)]
    if missing:
        raise ValueError(f"FERPIPE_SSO_SECRETS: [auth] in {path} lacks {', '.join(missing)}")
    return path


def sso_provider() -> str | None:
    """The provider name to pass st.login (None: the flat [auth] section)."""
    path = sso_secrets()
    if path is None:
        return None
    import tomllib

    auth = tomllib.loads(path.read_text(encoding="utf-8"))["auth"]
    if all(auth.get(k) for k in SSO_PROVIDER_KEYS):
        return None
    return next(k for k, v in auth.items() if isinstance(v, dict) and all(v.get(x) for x in SSO_PROVIDER_KEYS))


def sso_allowed(email: str | None) -> bool:
    """Whether a user the identity provider signed in may use the dashboard: $FERPIPE_SSO_ALLOWED lists addresses
    and @domains (comma-separated); unset, the provider's own users all may (the institution's app registration
    decides who those are)."""
    allowed = [a.strip().lower() for a in os.environ.get("FERPIPE_SSO_ALLOWED", "").split(",") if a.strip()]
    if not allowed:
        return True
    mail = (email or "").strip().lower()
    return bool(mail) and any(mail == a or (a.startswith("@") and mail.endswith(a)) for a in allowed)


def check_serving(store, address: str) -> None:
    """Refuse to serve the research dashboard beyond this machine without researcher sign-in (local accounts or
    single sign-on)."""
    trusted_proxies()  # a malformed list fails at start, not on the first request
    sso = sso_secrets() is not None  # a malformed file fails here, with its one line
    if not is_loopback(address) and not signin_configured(store) and not sso:
        raise ValueError(f"the dashboard would be open to anyone who can reach {address}: add a researcher account "
                         "first (ferpipe users add NAME), configure single sign-on (FERPIPE_SSO_SECRETS), or serve "
                         "respondents with ferpipe panel-server")  # fmt: skip


# ---- respondent links ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PanelLink:
    """What a respondent's link allows: one stimulus, one respondent id, until expires_at, ``uses`` uploads."""

    nonce: str
    stimulus_clip_id: str
    respondent: str
    expires_at: float
    uses: int
    used: int = 0
    state: str = "sent"
    clip_id: str | None = None


def parse_duration(text: str) -> float:
    """Seconds from "7d", "12h", "30m" or "90s"."""
    t = (text or "").strip().lower()
    units = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise ValueError(f"a duration is like 7d, 12h, 30m or 90s, got {text!r}") from None
    if not value > 0 or value > 366 * 86400:
        raise ValueError(f"a duration must be between 1 s and a year, got {text!r}")
    return value


def create_link(store, db_path, stimulus_clip_id: str, respondent: str, expires_s: float = LINK_TTL_S,
                uses: int = 1) -> tuple[PanelLink, str]:  # fmt: skip
    """A signed link token for one respondent and one stimulus (a whole clip id of a video in the library)."""
    respondent = (respondent or "").strip()
    if not respondent or len(respondent) > 200 or not respondent.isprintable():
        raise ValueError(f"a respondent id is 1-200 printable characters, got {respondent!r}")
    if not 1 <= int(uses) <= 100:
        raise ValueError(f"uses must be 1-100, got {uses}")
    clip = store.clip(stimulus_clip_id)  # whole ids only: ValueError for anything else
    from .frames import is_image

    if is_image(clip["path"]):
        raise ValueError(f"clip {stimulus_clip_id} is a photo, not a video a respondent can watch")
    link = PanelLink(secrets.token_urlsafe(12), clip["clip_id"], respondent, time.time() + float(expires_s), int(uses))
    store.add_link(link.nonce, link.stimulus_clip_id, link.respondent, link.expires_at, link.uses)
    store.audit("link made", detail=f"{link.respondent} → {link.stimulus_clip_id}")
    token = sign(server_secret(db_path), {"k": "link", "n": link.nonce, "s": link.stimulus_clip_id,
                                          "r": link.respondent, "exp": link.expires_at})  # fmt: skip
    return link, token


def check_link(store, db_path, token: str | None, need_use: bool = False) -> PanelLink:
    """The link a token stands for, if it is genuine, known, unexpired and (with need_use) not used up."""
    payload = unsign(server_secret(db_path), token or "")
    if payload.get("k") != "link":
        raise AccessError("invalid", "this link is not valid")
    row = store.link(str(payload.get("n", "")))
    if row is None or row["stimulus_clip_id"] != payload.get("s") or row["respondent"] != payload.get("r"):
        raise AccessError("invalid", "this link is not valid")
    link = PanelLink(row["nonce"], row["stimulus_clip_id"], row["respondent"], row["expires_at"], row["uses"],
                     row["used"], row["state"], row["clip_id"])  # fmt: skip
    if link.expires_at < time.time():
        raise AccessError("expired", "this link has expired")
    if need_use and link.used >= link.uses:
        raise AccessError("used", "this link has already been used")
    return link


def public_hosts() -> tuple[str, ...]:
    """The host names the server answers to: loopback, and FERPIPE_PUBLIC_HOSTS (comma-separated)."""
    extra = [h.strip().lower() for h in os.environ.get(PUBLIC_HOSTS_ENV, "").split(",") if h.strip()]
    return (*LOCAL_HOSTS, *extra)


def host_allowed(host_header: str | None, hosts: tuple[str, ...] | None = None) -> bool:
    """Whether a request's Host header (with or without a port) names this server."""
    if not host_header:
        return False
    host = host_header.strip().lower()
    if host.startswith("["):
        name = host.split("]")[0] + "]"
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name in (hosts or public_hosts())


# ---- the server side: Host allow-list and sign-in routes (Starlette, as Streamlit serves it) ---------------------------
class HostCheck:
    """ASGI middleware: answer only requests (and websockets) whose Host header names this server (host_allowed)."""

    def __init__(self, app, hosts: tuple[str, ...] | None = None):
        self.app, self.hosts = app, hosts

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
            if not host_allowed(host, self.hosts):
                if scope["type"] == "http":
                    from starlette.responses import PlainTextResponse

                    await PlainTextResponse("unknown host", status_code=403)(scope, receive, send)
                else:
                    await send({"type": "websocket.close", "code": 1008})
                return
        await self.app(scope, receive, send)


SIGN_IN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>ferpipe: sign in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; form-action 'self'">
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:12vh auto;color:#222}input{display:block;width:100%;
margin:.3rem 0 1rem;padding:.5rem;font-size:1rem;box-sizing:border-box}button{padding:.5rem 1.2rem;font-size:1rem}
.msg{color:#b00020}</style></head><body><h1>ferpipe</h1><p>Researcher sign-in</p>__MSG__
<form method="post" action="/ferpipe/login"><label>User<input name="user" autocomplete="username" required></label>
<label>Password<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></body></html>"""


def auth_routes(db_path_fn) -> list:
    """GET/POST /ferpipe/login (a plain form; a right name and password set the signed session cookie) and
    /ferpipe/logout."""
    import asyncio
    import html as htmllib

    from starlette.requests import Request
    from starlette.responses import HTMLResponse, RedirectResponse
    from starlette.routing import Route

    from .store import Store

    def page(message: str = "", status: int = 200) -> HTMLResponse:
        msg = f'<p class="msg">{htmllib.escape(message)}</p>' if message else ""
        return HTMLResponse(SIGN_IN_PAGE.replace("__MSG__", msg), status_code=status)

    async def login(request: Request):
        if request.method == "GET":
            return page()
        body = (await request.body())[:4096]
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        cookie = await asyncio.to_thread(sign_in, Store(db_path_fn()), db_path_fn(), form.get("user", ""),
                                         form.get("password", ""))  # fmt: skip
        if cookie is None:
            return page("Wrong user or password.", 401)
        resp = RedirectResponse("/", status_code=303)
        resp.set_cookie(SESSION_COOKIE, cookie, max_age=int(SESSION_TTL_S), httponly=True, samesite="strict", path="/")
        return resp

    async def logout(request: Request):
        resp = RedirectResponse("/ferpipe/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    return [Route("/ferpipe/login", login, methods=["GET", "POST"]), Route("/ferpipe/logout", logout, methods=["GET"])]


def researcher_request(request, db_path, token: str) -> bool:
    """Whether an HTTP request comes from a researcher's page: it carries the dashboard's token and, where accounts
    exist, a valid session cookie."""
    from .store import Store

    given = request.headers.get("x-ferpipe-token") or request.query_params.get("token") or ""
    if not given or not secrets.compare_digest(given, token):
        return False
    store = Store(db_path)
    return not signin_configured(store) or session_user(db_path, request.cookies.get(SESSION_COOKIE)) is not None


def link_states(store, stimulus_clip_id: str):
    """Each respondent link of a stimulus with its state: sent, opened, recorded (uploaded) or processed (its
    recording analysed), when it expires and the uses left."""
    import polars as pl

    links = store.links(stimulus_clip_id)
    if links.is_empty():
        return pl.DataFrame()
    done = store.respondents_processed(stimulus_clip_id)
    now = time.time()
    return links.select(
        pl.col("respondent"),
        pl.when(pl.col("respondent").is_in(list(done))).then(pl.lit("processed"))
        .when(pl.col("used") > 0).then(pl.lit("recorded")).otherwise(pl.col("state")).alias("state"),
        pl.when(pl.col("expires_at") < now).then(pl.lit("expired")).otherwise(
            pl.from_epoch(pl.col("expires_at").cast(pl.Int64)).dt.strftime("%Y-%m-%d %H:%M")).alias("expires"),
        (pl.col("uses") - pl.col("used")).alias("uses_left"),
    )  # fmt: skip


def trusted_proxies() -> list:
    """The networks of $FERPIPE_TRUSTED_PROXIES (the TLS proxy in front of the servers)."""
    nets = []
    for item in os.environ.get("FERPIPE_TRUSTED_PROXIES", "").split(","):
        if item.strip():
            try:
                nets.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError:
                raise ValueError(f"FERPIPE_TRUSTED_PROXIES: {item.strip()!r} is not an address or network") from None
    return nets


def client_address(request) -> str:
    """The address a request came from (the key of the per-address caps). Behind the TLS proxy the README asks for,
    every request comes from the proxy: where the peer is in $FERPIPE_TRUSTED_PROXIES (addresses or networks), the
    client is the right-most X-Forwarded-For address that is not a trusted proxy. Other peers' headers are ignored,
    so a client cannot choose its own address."""
    peer = request.client.host if request.client else "?"
    trusted = trusted_proxies()

    def is_trusted(addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.strip().strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    if not trusted or not is_trusted(peer):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getlist("x-forwarded-for")).split(",") if h.strip()]
    for hop in reversed(hops):
        if not is_trusted(hop):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # a malformed header: count the proxy
    return peer


class RateLimit:
    """At most ``limit`` requests per ``window_s`` seconds for each key (a client address), counted in memory: a
    respondent's page cannot flood the server with snapshots or uploads."""

    def __init__(self, limit: int, window_s: float):
        import threading
        from collections import deque

        if limit < 1 or window_s <= 0:
            raise ValueError(f"a rate limit needs limit >= 1 and a window > 0, got {limit}, {window_s}")
        self.limit, self.window_s = int(limit), float(window_s)
        self._hits: dict[str, deque] = {}
        self._deque = deque
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            hits = self._hits.setdefault(key, self._deque())
            while hits and hits[0] <= now - self.window_s:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            return True


def env_limit(name: str, default: int) -> int:
    try:
        value = int(os.environ.get(name, str(default)))
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {os.environ[name]!r}") from None
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value
