"""Access control on a real dashboard server (#23): signed respondent links, least-privilege routes, the Host
allow-list, researcher sign-in, and the probes of the last review, each written to fail on the version before."""

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

TOKEN = "test-token-access"


def _req(url, path, body=None, headers=None, method=None, query=None):
    q = ("?" + urllib.parse.urlencode(query)) if query else ""
    req = urllib.request.Request(f"{url}{path}{q}", data=body, method=method or ("POST" if body is not None else "GET"),
                                 headers=headers or {})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _rows(db) -> dict:
    from ferpipe.store import Store

    s = Store(db)
    return {t: int(s.query(f"SELECT count(*) AS n FROM {t}")["n"][0]) for t in ("clips", "runs", "observations")}


@pytest.fixture(scope="module")
def library(tmp_path_factory, samples):
    """Two stimuli and a respondent's recording, ingested (no runs needed for routes)."""
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path_factory.mktemp("access") / "lib.duckdb"
    p = Pipeline(Store(db), Settings(model="mini-xception"))
    a = p.ingest(str(samples["single_face.mp4"])).sha256[:12]
    b = p.ingest(str(samples["WolfgangLanger_Pexels.mp4"])).sha256[:12]
    return db, a, b


def _link(db, stimulus, respondent, expires="7d") -> str:
    r = run_cli("panel", "link", "--db", str(db), "--stimulus", stimulus, "--respondent", respondent, "--expires",
                expires, "--base-url", "http://x")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().split("\t")[1].split("link=")[1]


@pytest.mark.slow
def test_routes_refuse_what_a_link_does_not_allow_and_store_nothing(library, shot, samples):
    db, a, b = library
    good = _link(db, a, "r1")
    expired = _link(db, a, "r2", expires="1s")
    time.sleep(1.5)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    video = Path(samples["audience_grid.mp4"]).read_bytes()  # not yet in the library
    with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": TOKEN}) as url:
        before = _rows(db)
        for who, headers in (("no token", {}), ("wrong token", {"X-Ferpipe-Token": "nope"}),
                             ("forged link", {"X-Ferpipe-Link": forged}),
                             ("expired link", {"X-Ferpipe-Link": expired})):  # fmt: skip
            assert _req(url, f"/ferpipe/stimulus/{a}", headers=headers)[0] == 403, who
            assert _req(url, "/ferpipe/check", b"x", headers)[0] == 403, who
            assert _req(url, "/ferpipe/upload", video[:1000], headers, query={"name": "r.webm"})[0] == 403, who
            assert _req(url, "/ferpipe/metadata", b"source\n", headers)[0] == 403, who
        # a good link: its own stimulus only (another clip, or a prefix of its own: 403)
        link = {"X-Ferpipe-Link": good}
        assert _req(url, f"/ferpipe/stimulus/{b}", headers=link)[0] == 403
        assert _req(url, f"/ferpipe/stimulus/{a[:4]}", headers=link)[0] == 403
        code, body = _req(url, f"/ferpipe/stimulus/{a}", headers=link)
        assert code == 200 and len(body) > 10_000
        assert _req(url, "/ferpipe/metadata", b"source\n", link)[0] == 403  # a link never reaches researcher routes
        assert _rows(db) == before  # nothing stored by any refusal
        # its one upload: the settings, title and stimulus the browser sends are ignored
        evil = {"name": "r.mp4", "stimulus": "/etc/passwd", "settings": json.dumps({"sample_fps": 240}),
                "title": "hijack", "tags_json": json.dumps({"panel": "other"})}  # fmt: skip
        code, body = _req(url, "/ferpipe/upload", video, link, query=evil)
        assert code == 200, body
        job = json.loads(body)
        assert job["title"].endswith(" · panel · r1") and "hijack" not in job["title"]
        code, body = _req(url, "/ferpipe/upload", video[:1000], link, query={"name": "r.mp4"})
        assert code == 403 and b"already been used" in body  # cannot upload twice
        other = _link(db, b, "r1")  # a link for another stimulus cannot post for this one either
        assert _req(url, f"/ferpipe/stimulus/{a}", headers={"X-Ferpipe-Link": other})[0] == 403


@pytest.mark.slow
def test_probes_from_the_review(library, shot, tmp_path):
    """Server path as stimulus, prefix ids, trusted settings, a foreign Host header, the 20000x20000 PNG, and health
    while a preview is encoded."""
    import http.client
    import io
    import threading

    from PIL import Image

    db, a, _ = library
    with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": TOKEN}) as url:
        before = _rows(db)
        researcher = {"X-Ferpipe-Token": TOKEN}
        code, body = _req(url, "/ferpipe/upload", b"\x00" * 10, researcher,
                          query={"name": "x.mp4", "stimulus": "/etc/hostname"})  # fmt: skip
        assert code == 400 and b"not a clip id" in body  # a server path is never a stimulus
        code, body = _req(url, "/ferpipe/upload", b"\x00" * 10, researcher,
                          query={"name": "x.mp4", "stimulus": a[:3]})  # fmt: skip
        assert code == 400  # nor a prefix
        for settings in ({"detector_model": "/etc/passwd"}, {"model": "/tmp/evil.onnx"}):
            code, body = _req(url, "/ferpipe/upload", b"\x00" * 10, researcher,
                              query={"name": "x.mp4", "settings": json.dumps(settings)})  # fmt: skip
            assert code == 400, settings
        assert _req(url, "/panel", query={"stimulus": a[:2]})[0] == 200  # the page answers, but (below) with no panel
        assert _rows(db) == before
        host = urllib.parse.urlsplit(url)
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        conn.request("GET", "/", headers={"Host": "rebind.example.com"})
        assert conn.getresponse().status == 403  # DNS rebinding: a foreign Host gets nothing
        conn.close()
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
        conn.request("GET", "/_stcore/health", headers={"Host": f"localhost:{host.port}"})
        assert conn.getresponse().status == 200
        conn.close()
        # the decompression bomb: refused before decoding
        buf = io.BytesIO()
        Image.new("L", (20000, 20000)).save(buf, "PNG", optimize=True)
        code, body = _req(url, "/ferpipe/check", buf.getvalue(), researcher)
        assert code == 400 and b"pixels" in body
        # health answers within 1 s while a preview is encoded for a stimulus the browser cannot play
        mkv = tmp_path / "stim.mkv"
        import subprocess

        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=25",
                        "-t", "20", "-c:v", "mpeg4", str(mkv)], check=True)  # fmt: skip
        from ferpipe.pipeline import Pipeline, Settings
        from ferpipe.store import Store

        mkv_id = Pipeline(Store(db), Settings(model="mini-xception")).ingest(str(mkv)).sha256[:12]
        t = threading.Thread(target=_req, args=(url, f"/ferpipe/stimulus/{mkv_id}"),
                             kwargs={"headers": researcher}, daemon=True)  # fmt: skip
        t.start()
        time.sleep(1.0)
        slowest = 0.0
        while t.is_alive():
            t0 = time.monotonic()
            assert _req(url, "/_stcore/health")[0] == 200
            slowest = max(slowest, time.monotonic() - t0)
            time.sleep(0.2)
        assert slowest < 1.0, slowest


def test_dashboard_refuses_a_public_address_without_accounts(tmp_path):
    db = tmp_path / "x.duckdb"
    r = run_cli("dashboard", "--db", str(db), "--address", "0.0.0.0", timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("error:") and "ferpipe users add" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 3  # one message (wrapped on a narrow terminal)


def test_sessions_links_and_hosts_by_hand(tmp_path):
    from ferpipe import access
    from ferpipe.store import Store

    db = tmp_path / "a.duckdb"
    store = Store(db)
    store.migrate()
    with pytest.raises(ValueError, match="8 characters"):
        access.add_user(store, "ana", "short")
    with pytest.raises(ValueError, match="user name"):
        access.add_user(store, "a b", "long enough pw")
    access.add_user(store, "ana", "long enough pw")
    assert access.signin_configured(store)
    assert access.sign_in(store, db, "ana", "wrong password") is None
    cookie = access.sign_in(store, db, "ana", "long enough pw")
    assert access.session_user(db, cookie) == "ana"
    assert access.session_user(db, cookie[:-2] + "xx") is None  # forged
    assert access.session_user(tmp_path / "other.duckdb", cookie) is None  # another server's secret
    assert store.user_hash("ana").startswith("$2")  # bcrypt, never the password
    assert oct((tmp_path / "a.duckdb.secret").stat().st_mode)[-3:] == "600"
    log = store.audit_log()
    assert {"sign-in", "sign-in refused", "user added"} <= set(log["action"].to_list())
    for host, ok in (("127.0.0.1:8501", True), ("localhost", True), ("[::1]:8501", True), ("evil.com", False),
                     ("127.0.0.1.evil.com", False), ("", False)):  # fmt: skip
        assert access.host_allowed(host) is ok, host
    assert access.parse_duration("7d") == 7 * 86400
    with pytest.raises(ValueError, match="duration"):
        access.parse_duration("soon")


def test_forget_removes_a_respondent_everywhere(tmp_path, samples):
    """A respondent's own recording (with its media), their name and attributes in a group clip, their faces there
    and their links: after `ferpipe forget`, nothing in any table or the media folder belongs to them."""
    from ferpipe.pipeline import Pipeline, Settings
    from ferpipe.store import Store

    db = tmp_path / "f.duckdb"
    store = Store(db)
    p = Pipeline(store, Settings(model="mini-xception", sample_fps=2.0))
    stim = p.ingest(str(samples["single_face.mp4"])).sha256[:12]
    own = p.process(str(samples["WolfgangLanger_Pexels.mp4"]), tags={"respondent": "r7"}).clip_id
    group = p.process(str(samples["audience_grid.mp4"])).clip_id
    run = store.best_run(group)
    pid = int(store.people(run)["person_id"][0])
    store.add_edit(group, "name", store.anchor(run, pid), label="r7")
    from ferpipe.people import relink

    relink(store, run, group)
    store.set_attributes(group, "r7", {"age": "30-39"})
    _link(db, stim, "r7")
    media = Path(store.clip(own)["path"])
    assert media.is_file()
    faces_before = store.query("SELECT count(*) AS n FROM faces WHERE person_label = 'r7'")["n"][0]
    assert faces_before >= 1
    r = run_cli("forget", "--db", str(db), "--respondent", "r7")
    assert r.returncode == 0, r.stderr
    assert "1 recordings" in r.stdout and "1 attributes" in r.stdout and "1 links" in r.stdout
    for sql in ("SELECT count(*) AS n FROM clip_tags WHERE value = 'r7'",
                "SELECT count(*) AS n FROM faces WHERE person_label = 'r7'",
                "SELECT count(*) AS n FROM person_attributes WHERE person = 'r7'",
                "SELECT count(*) AS n FROM person_edits WHERE label = 'r7'",
                "SELECT count(*) AS n FROM panel_links WHERE respondent = 'r7'",
                f"SELECT count(*) AS n FROM clips WHERE clip_id = '{own}'",
                f"SELECT count(*) AS n FROM runs WHERE clip_id = '{own}'"):  # fmt: skip
        assert store.query(sql)["n"][0] == 0, sql
    assert not media.exists()
    orphans = store.query("SELECT count(*) AS n FROM observations o ANTI JOIN faces f USING (run_id, face_id)")
    assert orphans["n"][0] == 0  # the group clip keeps its other people, and no reading without its face
    assert store.people(run).height >= 5
    assert "respondent forgotten" in store.audit_log()["action"].to_list()


@pytest.mark.slow
def test_sign_in_in_a_browser(library, shot):
    """With an account: a respondent's link opens only its panel; without a session every researcher page asks for
    sign-in; a wrong password is refused; signed in, the researcher sees the dashboard as before."""
    import shutil

    from playwright.sync_api import expect, sync_playwright

    db, a, _ = library
    r = run_cli("users", "add", "ana", "--db", str(db), "--password-stdin", input_text="correct horse 1\n")
    assert r.returncode == 0, r.stderr
    link = _link(db, a, "r9")
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": TOKEN}) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=shot.CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(f"{url}/panel?link={link}")
            expect(page.frame_locator("iframe").first.get_by_text("Before you start")).to_be_visible(timeout=60000)
            assert TOKEN not in page.content()  # the dashboard's token is never in a respondent's page
            for path in ("", "compare", "export", "people", f"clip?clip={a}"):
                page.goto(f"{url}/{path}")
                expect(page.get_by_role("link", name="Sign in")).to_be_visible(timeout=60000)
                assert not page.get_by_role("link", name="Library").count()  # no navigation to researcher pages
            page.goto(f"{url}/compare?link={link}")  # a link does not open a researcher page either
            expect(page.frame_locator("iframe").first.get_by_text("Before you start")).to_be_visible(timeout=60000)
            assert not page.get_by_role("heading", name="Compare").count()
            page.goto(f"{url}/ferpipe/login")
            page.get_by_label("User").fill("ana")
            page.get_by_label("Password").fill("wrong password")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_text("Wrong user or password.")).to_be_visible(timeout=30000)
            page.get_by_label("User").fill("ana")
            page.get_by_label("Password").fill("correct horse 1")
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Library")).to_be_visible(timeout=60000)
            expect(page.get_by_text("Signed in as ana")).to_be_visible()
            page.goto(f"{url}/compare")
            expect(page.get_by_role("heading", name="Compare")).to_be_visible(timeout=60000)
            browser.close()
    finally:
        run_cli("users", "remove", "ana", "--db", str(db))  # the module's other tests run without accounts


@pytest.mark.slow
def test_quotas_per_client_address(library, shot, samples):
    """Beyond FERPIPE_PANEL_UPLOADS_PER_HOUR uploads (or FERPIPE_PANEL_REQUESTS_PER_MINUTE snapshots and stimulus
    fetches) from one address, a link gets 429 and nothing is stored."""
    db, a, _ = library
    links = [_link(db, a, f"q{k}") for k in range(3)]
    env = {"FERPIPE_UPLOAD_TOKEN": TOKEN, "FERPIPE_PANEL_UPLOADS_PER_HOUR": "1",
           "FERPIPE_PANEL_REQUESTS_PER_MINUTE": "3"}  # fmt: skip
    with shot.serve(db, env=env) as url:
        codes = [_req(url, f"/ferpipe/stimulus/{a}", headers={"X-Ferpipe-Link": links[0]}, method="HEAD")[0]
                 for _ in range(4)]  # fmt: skip
        assert codes[:3] == [200] * 3 and codes[3] == 429
        assert _req(url, f"/ferpipe/stimulus/{a}", headers={"X-Ferpipe-Token": TOKEN})[0] == 200  # researchers: no cap
        first = _req(url, "/ferpipe/upload", b"\x00" * 100, {"X-Ferpipe-Link": links[1]}, query={"name": "r.webm"})
        assert first[0] in (200, 400)  # counted (garbage bytes may be refused later by the job)
        before = _rows(db)
        code, body = _req(url, "/ferpipe/upload", b"\x00" * 100, {"X-Ferpipe-Link": links[2]}, query={"name": "r.webm"})
        assert code == 429 and b"too many uploads" in body
        assert _rows(db) == before


@pytest.mark.slow
def test_panel_server_serves_respondents_only(library, tmp_path):
    """`ferpipe panel-server`: a link's panel, its stimulus and nothing else; researcher routes do not exist on it
    and the dashboard's token opens nothing."""
    import os
    import shutil
    import subprocess
    import sys

    from playwright.sync_api import expect, sync_playwright

    db, a, b = library
    link = _link(db, a, "ps1")
    port = __import__("conftest").free_port()
    env = dict(os.environ, FERPIPE_UPLOAD_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "ferpipe.cli", "panel-server", "--db", str(db), "--port",
                             str(port)], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if _req(url, "/_stcore/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert _req(url, "/ferpipe/metadata", b"source\n", {"X-Ferpipe-Token": TOKEN})[0] in (404, 405)
        assert b"Researcher sign-in" not in _req(url, "/ferpipe/login")[1]  # no researcher sign-in on this server
        assert _req(url, f"/ferpipe/stimulus/{a}", headers={"X-Ferpipe-Token": TOKEN})[0] == 403
        assert _req(url, f"/ferpipe/stimulus/{a}", headers={"X-Ferpipe-Link": link})[0] == 200
        assert _req(url, f"/ferpipe/stimulus/{b}", headers={"X-Ferpipe-Link": link})[0] == 403
        chromium = shutil.which("chromium") or "/usr/bin/chromium"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page()
            page.goto(f"{url}/panel?link={link}")
            expect(page.frame_locator("iframe").first.get_by_text("Before you start")).to_be_visible(timeout=60000)
            page.goto(f"{url}/library")
            expect(page.get_by_text("open the link the researcher sent you")).to_be_visible(timeout=60000)
            assert not page.get_by_role("link", name="Library").count()
            browser.close()
    finally:
        proc.terminate()
        proc.wait(20)


def _sso_secrets(path: Path, dashboard_port: int, issuer: str, **drop) -> Path:
    from oidc_provider import CLIENT_ID, CLIENT_SECRET

    values = {"redirect_uri": f"http://127.0.0.1:{dashboard_port}/oauth2callback", "cookie_secret": "s3cret-" * 6,
              "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
              "server_metadata_url": f"{issuer}/.well-known/openid-configuration"}  # fmt: skip
    for key in drop:
        values.pop(key)
    path.write_text("[auth]\n" + "".join(f'{k} = "{v}"\n' for k, v in values.items()))
    return path


def test_sso_secrets_are_checked_where_they_enter(tmp_path, monkeypatch):
    from ferpipe import access
    from ferpipe.store import Store

    store = Store(tmp_path / "x.duckdb")
    store.migrate()
    monkeypatch.setenv("FERPIPE_SSO_SECRETS", str(_sso_secrets(tmp_path / "bad.toml", 8501, "http://idp",
                                                               client_id=None)))  # fmt: skip
    with pytest.raises(ValueError, match="lacks client_id"):
        access.check_serving(store, "0.0.0.0")
    r = run_cli("dashboard", "--db", str(tmp_path / "x.duckdb"), "--address", "0.0.0.0", timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("error: FERPIPE_SSO_SECRETS") and "Traceback" not in r.stderr
    monkeypatch.setenv("FERPIPE_SSO_SECRETS", str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match="no such file"):
        access.check_serving(store, "0.0.0.0")
    monkeypatch.setenv("FERPIPE_SSO_SECRETS", str(_sso_secrets(tmp_path / "good.toml", 8501, "http://idp")))
    access.check_serving(store, "0.0.0.0")  # single sign-on configured: a public address is allowed
    monkeypatch.setenv("FERPIPE_SSO_ALLOWED", "ada@lab.example.org, @psych.example.edu")
    assert access.sso_allowed("Ada@Lab.example.org") and access.sso_allowed("bo@psych.example.edu")
    assert not access.sso_allowed("eve@example.com") and not access.sso_allowed(None)


@pytest.mark.slow
def test_single_sign_on_in_a_browser(library, shot, tmp_path, monkeypatch):
    """Streamlit's OIDC login against a real (test) identity provider on 127.0.0.1: every researcher page asks for
    sign-in, the provider's user gets the dashboard, the sign-in is in the audit log, sign-out ends it, and a user
    outside FERPIPE_SSO_ALLOWED is turned away."""
    import shutil

    from conftest import free_port
    from oidc_provider import oidc_provider
    from playwright.sync_api import expect, sync_playwright

    from ferpipe.store import Store

    db, a, _ = library
    idp_port, port = free_port(), free_port()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with oidc_provider(idp_port) as (issuer, calls):
        monkeypatch.setenv("FERPIPE_SSO_SECRETS", str(_sso_secrets(tmp_path / "sso.toml", port, issuer)))
        with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": TOKEN}, port=port) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=shot.CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            for path in ("compare", f"clip?clip={a}", ""):
                page.goto(f"{url}/{path}")
                expect(page.get_by_role("button", name="Sign in with single sign-on")).to_be_visible(timeout=60000)
                assert not page.get_by_role("link", name="Library").count()
            assert TOKEN not in page.content()
            page.get_by_role("button", name="Sign in with single sign-on").click()
            expect(page.get_by_role("heading", name="Library")).to_be_visible(timeout=60000)
            expect(page.get_by_text("Signed in as ada@lab.example.org")).to_be_visible()
            assert {"discovery", "authorize", "token", "jwks"} <= set(calls)  # the whole code flow, ID token checked
            page.goto(f"{url}/compare")
            expect(page.get_by_role("heading", name="Compare")).to_be_visible(timeout=60000)
            log = Store(db).audit_log()
            assert log.filter((log["action"] == "sign-in") & (log["who"] == "ada@lab.example.org")).height >= 1
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("button", name="Sign in with single sign-on")).to_be_visible(timeout=60000)
            browser.close()
        monkeypatch.setenv("FERPIPE_SSO_ALLOWED", "@psych.example.edu")
        with shot.serve(db, env={"FERPIPE_UPLOAD_TOKEN": TOKEN}, port=port) as url, sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=shot.CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url)
            page.get_by_role("button", name="Sign in with single sign-on").click(timeout=60000)
            expect(page.get_by_text("may not use this dashboard")).to_be_visible(timeout=60000)
            assert not page.get_by_role("link", name="Library").count()
            browser.close()


def test_client_address_behind_a_trusted_proxy_only(monkeypatch):
    """Per-address caps behind the TLS proxy: X-Forwarded-For counts only when the proxy is trusted."""
    from starlette.requests import Request

    from ferpipe.access import client_address

    def request(peer: str, *forwarded: str) -> Request:
        headers = [(b"x-forwarded-for", f.encode()) for f in forwarded]
        return Request({"type": "http", "client": (peer, 5000), "headers": headers, "method": "GET", "path": "/"})

    assert client_address(request("10.0.0.2", "203.0.113.7")) == "10.0.0.2"  # no trusted proxies: headers ignored
    monkeypatch.setenv("FERPIPE_TRUSTED_PROXIES", "10.0.0.0/24, 127.0.0.1")
    assert client_address(request("10.0.0.2", "203.0.113.7")) == "203.0.113.7"
    # a client's own forged entry comes first; the proxies append the real address after it
    assert client_address(request("10.0.0.2", "6.6.6.6, 203.0.113.7")) == "203.0.113.7"
    assert client_address(request("10.0.0.2", "198.51.100.1", "203.0.113.9, 10.0.0.3")) == "203.0.113.9"
    assert client_address(request("192.0.2.50", "203.0.113.7")) == "192.0.2.50"  # not a trusted peer
    assert client_address(request("10.0.0.2", "not-an-ip")) == "10.0.0.2"
    monkeypatch.setenv("FERPIPE_TRUSTED_PROXIES", "proxy.local")
    with pytest.raises(ValueError, match="FERPIPE_TRUSTED_PROXIES"):
        client_address(request("10.0.0.2"))
