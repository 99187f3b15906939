"""The notifications demo in a real browser: headless Chromium (selenium) logs in, the
page opens its WebSocket, and notifications posted from elsewhere appear in the bar of
the right user's page only.

Skipped when chromium, chromedriver or selenium are missing. The screenshots
(demo.png, other.png) are left in the test's tmp dir.
"""

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from conftest import PY, REPO, _Factory
from site_client import USERS, SiteClient

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
EXAMPLE = REPO / "examples" / "notifications"
APP = "notifications.asgi:application"
WAIT = 10  # seconds for anything the browser does

if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (apt install chromium chromium-driver)",
                allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver",
                                reason="needs selenium (apt install python3-selenium)")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (EXAMPLE / "inbox").is_dir(),
                       reason="examples/notifications has no inbox app yet"),
]


# --------------------------------------------------------------------------- server

@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-site")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL")}
    env.update({"NOTIFICATIONS_DB": str(tmp / "db.sqlite3"), "PYTHONDONTWRITEBYTECODE": "1"})
    r = subprocess.run([PY, "manage.py", "demo_setup"], cwd=EXAMPLE, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    factory = _Factory(tmp)
    srv = factory(APP, cwd=EXAMPLE, env=env, ready_timeout=20)
    yield srv
    problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def notify(srv, username, text):
    """Post a notification as username would from the page."""
    assert SiteClient(srv).login(username).notify(text)["sent"] is True


# --------------------------------------------------------------------------- browsers

@pytest.fixture
def browser():
    """Factory: browser(*extra_args) -> a new headless Chromium (own profile); all quit
    at the end."""
    made = []

    def make(*extra):
        profile = tempfile.mkdtemp(prefix="laurel-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-dev-shm-usage", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--window-size=1000,760",
                  f"--user-data-dir={profile}", *extra):
            opts.add_argument(a)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        except Exception:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        made.append((driver, profile))
        return driver

    yield make
    for driver, profile in made:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def log_in(driver, srv, username):
    """Logs in through the login form and waits for the page's socket to be open."""
    driver.get(srv.url("/login/"))
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(USERS[username])
    driver.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
    wait = WebDriverWait(driver, WAIT)
    wait.until(EC.text_to_be_present_in_element((By.ID, "username"), username))
    assert driver.current_url == srv.url("/")
    wait.until(lambda d: d.find_element(By.ID, "ws-state").get_attribute("data-state")
               == "connected",
               message="the page's WebSocket did not connect: "
                       + _state(driver))


def _state(driver):
    try:
        return driver.find_element(By.ID, "ws-state").text
    except Exception as e:  # noqa: BLE001 - only for the failure message
        return repr(e)


def bar(driver):
    return [e.text for e in driver.find_elements(By.CSS_SELECTOR,
                                                  "#notification-bar > .notification")]


def wait_for_notification(driver, text):
    WebDriverWait(driver, WAIT).until(
        lambda d: text in bar(d),
        message=f"{text!r} never appeared in the bar; it holds {bar(driver)!r}")


def unique(prefix):
    return f"{prefix} {uuid.uuid4().hex[:8]}"


# --------------------------------------------------------------------------- tests

def test_anonymous_page_has_login_link(browser, site):
    d = browser()
    d.get(site.url("/"))
    assert "Hello from laurel" in d.find_element(By.TAG_NAME, "h1").text
    assert d.find_elements(By.ID, "notification-bar") == []
    d.find_element(By.LINK_TEXT, "Log in").click()
    WebDriverWait(d, WAIT).until(EC.presence_of_element_located((By.ID, "login-form")))


def test_notifications_reach_the_right_browser(browser, site, tmp_path):
    demo_page, other_page = browser(), browser()
    log_in(demo_page, site, "demo")
    log_in(other_page, site, "other")

    # Posted by another HTTP client logged in as demo: shows in demo's page only.
    text = unique("Build finished")
    notify(site, "demo", text)
    wait_for_notification(demo_page, text)
    # other's page is connected too; give a misrouted message time to arrive.
    time.sleep(1)
    assert bar(other_page) == [], "other's page shows demo's notification"

    # The page's own form (fetch with the CSRF token) notifies the user's pages.
    mine = unique("Hello me")
    box = demo_page.find_element(By.ID, "notify-text")
    box.send_keys(mine)
    demo_page.find_element(By.CSS_SELECTOR, "#notify-form button[type=submit]").click()
    wait_for_notification(demo_page, mine)
    assert box.get_attribute("value") == ""

    # other's notifications reach other's page, not demo's.
    theirs = unique("For other")
    notify(site, "other", theirs)
    wait_for_notification(other_page, theirs)
    assert bar(other_page) == [theirs]
    assert bar(demo_page) == [text, mine]
    assert demo_page.find_element(By.ID, "ws-state").get_attribute("data-state") == "connected"

    # HTML in a notification is shown as text.
    html = "<b>bold?</b> " + uuid.uuid4().hex[:6]
    notify(site, "demo", html)
    wait_for_notification(demo_page, html)
    assert demo_page.find_elements(By.CSS_SELECTOR, "#notification-bar b") == []

    for name, d in (("demo", demo_page), ("other", other_page)):
        path = Path(tmp_path) / f"{name}.png"
        assert d.save_screenshot(str(path)), path
        assert path.stat().st_size > 1000
    print(f"screenshots: {tmp_path}/demo.png, {tmp_path}/other.png")


def test_page_reconnects_after_server_restart(browser, tmp_path, site):
    """A page whose socket dropped (server restarted) reconnects by itself and then
    receives notifications again."""
    factory = _Factory(tmp_path / "srv")
    env = dict(site.env)
    srv = factory(APP, cwd=EXAMPLE, env=env, ready_timeout=20)
    try:
        d = browser()
        log_in(d, srv, "demo")
        port = srv.port
        assert srv.stop() == 0
        WebDriverWait(d, WAIT).until(
            lambda d: d.find_element(By.ID, "ws-state").get_attribute("data-state")
            == "disconnected")
        srv2 = factory(APP, cwd=EXAMPLE, env=env, port=port, ready_timeout=20)
        WebDriverWait(d, 20).until(
            lambda d: d.find_element(By.ID, "ws-state").get_attribute("data-state")
            == "connected", message="the page did not reconnect")
        text = unique("After restart")
        notify(srv2, "demo", text)
        wait_for_notification(d, text)
    finally:
        problems = factory.finalize()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


class _Https:
    """What log_in needs of a server (its URLs), for a server speaking TLS."""

    def __init__(self, srv):
        self.port = srv.port

    def url(self, path="/"):
        return f"https://localhost:{self.port}{path}"


def test_notifications_over_https_and_wss(browser, tmp_path, site):
    """The same site served over TLS (a certificate made here; Chromium trusts that one
    key only, through its SPKI pin): login over https:// on HTTP/2 (ALPN), the page's
    socket over wss:// on that same HTTP/2 connection (RFC 8441), a notification sent
    from the page's own form shown in its bar."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import serialization

    from tlsfiles import Pki

    leaf = Pki(tmp_path / "pki").issue("localhost")
    spki = leaf.x509.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    pin = base64.b64encode(hashlib.sha256(spki).digest()).decode()
    factory = _Factory(tmp_path / "srv")
    srv = factory(APP, "--ssl-certfile", leaf.cert, "--ssl-keyfile", leaf.key, cwd=EXAMPLE,
                  env=dict(site.env), ready_timeout=20)
    try:
        d = browser(f"--ignore-certificate-errors-spki-list={pin}")
        log_in(d, _Https(srv), "demo")
        assert d.execute_script("return location.protocol") == "https:"
        # Chromium took HTTP/2 (ALPN h2) for the page.
        assert d.execute_script(
            "return performance.getEntriesByType('navigation')[0].nextHopProtocol") == "h2"
        mine = unique("Over TLS")
        d.find_element(By.ID, "notify-text").send_keys(mine)
        d.find_element(By.CSS_SELECTOR, "#notify-form button[type=submit]").click()
        wait_for_notification(d, mine)
        # An https: page may only open wss:// sockets (mixed content): this one did,
        # over the page's own HTTP/2 connection (RFC 8441: the same client address and
        # port in the access log).
        log = srv.stdout()
        page = re.search(r'^(\S+) - - \[[^]]*\] "GET /" 200', log, re.M)
        sock = re.search(r'^(\S+) - - \[[^]]*\] "WSCONNECT /notifications/"', log, re.M)
        assert page and sock, log[-2000:]
        assert sock.group(1) == page.group(1), log[-2000:]
    finally:
        problems = factory.finalize()
    assert not problems, problems


def test_chromium_gets_permessage_deflate(browser, site):
    """Chromium offers permessage-deflate on every WebSocket and laurel accepts it
    (ws.extensions from the page's side); a notification long enough to go compressed
    (64 bytes and more) reaches the bar intact, and so does a short one."""
    d = browser()
    log_in(d, site, "demo")
    d.set_script_timeout(WAIT)
    ext = d.execute_async_script("""
        var done = arguments[arguments.length - 1];
        var scheme = location.protocol === "https:" ? "wss://" : "ws://";
        var ws = new WebSocket(scheme + location.host + "/notifications/");
        ws.onopen = function () { var e = ws.extensions; ws.close(); done(e); };
        ws.onerror = function () { done("error"); };
    """)
    assert ext.startswith("permessage-deflate"), ext
    long_text = unique("Long") + " " + "the quick brown fox jumps over the lazy dog " * 20
    notify(site, "demo", long_text)
    wait_for_notification(d, long_text.strip())
    short = unique("Short")
    notify(site, "demo", short)
    wait_for_notification(d, short)
    assert d.find_element(By.ID, "ws-state").get_attribute("data-state") == "connected"
