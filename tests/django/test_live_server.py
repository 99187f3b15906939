"""Channels' live-server tests on laurel (laurel.testing): Django TestCases, run the
way Django runs tests (DiscoverRunner: a test database, TransactionTestCase flushes),
against the notifications example.

This file is both sides:

* imported by pytest: tests that write a settings module in a temporary directory
  (the example's settings, a file SQLite test database, a static file) and run this
  file as a script with one TestCase class to run;
* run as a script (``__main__``): ``django.setup()``, the TestCase classes below, and
  DiscoverRunner. Django's own test process is kept out of pytest's, which never sets
  Django up.

The cases:

* ``NotificationsInBrowser`` (LaurelLiveServerTestCase): headless Chromium logs in as a
  user created in the test database, the page opens its WebSocket, "Notify me" sends a
  notification that appears in ``#notification-bar``; the session the server wrote is
  in the test database; static files and the Server header.
* ``DropInProcess``: a plain ChannelsLiveServerTestCase with
  ``ProtocolServerProcess = LaurelProcess``: HTTP and a WebSocket consumer.
* ``ProcessErrors``: LaurelProcess used directly, as daphne's testing helpers use
  DaphneProcess: an application that fails to build is reported in ``errors``.
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
STATIC_NAME = "laurel-live.css"
STATIC_BODY = b"/* served by laurel in a live-server test */\nbody { color: #24513a; }\n"


if __name__ != "__main__":
    # ------------------------------------------------------------------ pytest side
    import subprocess

    import pytest

    from conftest import LAUREL_BIN, PY, REPO

    EXAMPLE = REPO / "examples" / "notifications"
    BAD_STDERR = ("AddressSanitizer", "LeakSanitizer", "Fatal Python error")

    pytestmark = [
        pytest.mark.laurel_only,
        pytest.mark.slow,
        pytest.mark.skipif(not (EXAMPLE / "inbox").is_dir(),
                           reason="examples/notifications has no inbox app yet"),
    ]

    SETTINGS = '''\
from notifications.settings import *  # noqa: F401,F403

INSTALLED_APPS = ["laurel", *INSTALLED_APPS]
# ChannelsLiveServerTestCase needs a test database both processes can open.
DATABASES["default"]["TEST"] = {{"NAME": {test_db!r}}}
STATICFILES_DIRS = [{static!r}]
'''

    def run_case(tmp_path, case, timeout=240):
        static = tmp_path / "static"
        static.mkdir()
        (static / STATIC_NAME).write_bytes(STATIC_BODY)
        (tmp_path / "laurel_live_settings.py").write_text(
            SETTINGS.format(test_db=str(tmp_path / "test-db.sqlite3"), static=str(static)))
        env = {k: v for k, v in os.environ.items()
               if k not in ("DJANGO_SETTINGS_MODULE", "NOTIFICATIONS_REDIS_URL")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "laurel_live_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(EXAMPLE), str(REPO / "python")]),
            "NOTIFICATIONS_DB": str(tmp_path / "db.sqlite3"),
            "LAUREL_BIN": str(LAUREL_BIN),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
        })
        try:
            r = subprocess.run([PY, str(HERE), case], cwd=tmp_path, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               errors="replace", timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{case} did not finish within {timeout}s:\n{exc.stderr}")
        out = r.stdout + r.stderr
        assert r.returncode == 0, f"{case} failed (status {r.returncode}):\n{out[-12000:]}"
        for bad in BAD_STDERR:
            assert bad not in out, out[-12000:]
        return out

    def test_laurel_live_server_test_case_in_browser(tmp_path):
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER}")
        pytest.importorskip("selenium.webdriver")
        out = run_case(tmp_path, "NotificationsInBrowser")
        assert "test_notification_reaches_the_bar" in out and "ok" in out, out
        assert "Ran 2 tests" in out and "\nOK" in out, out

    def test_channels_live_server_test_case_with_laurel_process(tmp_path):
        pytest.importorskip("websockets")
        out = run_case(tmp_path, "DropInProcess")
        assert "Ran 1 test" in out and "\nOK" in out, out

    def test_laurel_process_reports_errors(tmp_path):
        out = run_case(tmp_path, "ProcessErrors")
        assert "Ran 2 tests" in out and "\nOK" in out, out
        # laurel's own report of the failure reached the test's stderr
        assert "ZeroDivisionError" in out, out


else:
    # ------------------------------------------------------------------ Django side
    import asyncio
    import functools
    import http.client
    import json
    import operator
    import shutil
    import tempfile
    import unittest
    import uuid

    import django

    django.setup()

    from channels.testing import ChannelsLiveServerTestCase  # noqa: E402
    from django.contrib.auth import get_user_model  # noqa: E402
    from django.contrib.sessions.models import Session  # noqa: E402
    from django.test import TransactionTestCase  # noqa: E402
    from django.test.runner import DiscoverRunner  # noqa: E402

    from laurel.testing import LaurelLiveServerTestCase, LaurelProcess  # noqa: E402

    WAIT = 15

    def http_get(host, port, path):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("GET", path)
            r = conn.getresponse()
            return r.status, r.headers, r.read()
        finally:
            conn.close()

    class NotificationsInBrowser(LaurelLiveServerTestCase):
        """The notifications page in headless Chromium, served by laurel."""

        password = "alice-pw-4711"

        @classmethod
        def setUpClass(cls):
            from selenium import webdriver
            from selenium.webdriver.chrome.service import Service

            super().setUpClass()
            cls.profile = tempfile.mkdtemp(prefix="laurel-chromium-")
            opts = webdriver.ChromeOptions()
            opts.binary_location = CHROMIUM
            for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--disable-background-networking",
                        "--no-first-run", "--disable-sync", "--window-size=1000,760",
                        f"--user-data-dir={cls.profile}"):
                opts.add_argument(arg)
            try:
                cls.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
            except Exception:
                shutil.rmtree(cls.profile, ignore_errors=True)
                super().tearDownClass()
                raise

        @classmethod
        def tearDownClass(cls):
            try:
                cls.driver.quit()
            finally:
                shutil.rmtree(cls.profile, ignore_errors=True)
                super().tearDownClass()

        def setUp(self):
            get_user_model().objects.create_user("alice", password=self.password)

        def bar(self):
            from selenium.webdriver.common.by import By

            return [e.text for e in self.driver.find_elements(
                By.CSS_SELECTOR, "#notification-bar > .notification")]

        def test_notification_reaches_the_bar(self):
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support import expected_conditions as EC
            from selenium.webdriver.support.ui import WebDriverWait

            d = self.driver
            wait = WebDriverWait(d, WAIT)
            d.get(self.live_server_url + "/login/")
            d.find_element(By.ID, "id_username").send_keys("alice")
            d.find_element(By.ID, "id_password").send_keys(self.password)
            d.find_element(By.CSS_SELECTOR, "#login-form button[type=submit]").click()
            wait.until(EC.text_to_be_present_in_element((By.ID, "username"), "alice"))
            self.assertEqual(d.current_url, self.live_server_url + "/")
            wait.until(lambda d: d.find_element(By.ID, "ws-state").get_attribute(
                "data-state") == "connected", message="the page's WebSocket did not open")
            self.assertEqual(self.bar(), [])

            text = f"Build finished {uuid.uuid4().hex[:8]}"
            d.find_element(By.ID, "notify-text").send_keys(text)
            d.find_element(By.CSS_SELECTOR, "#notify-form button[type=submit]").click()
            wait.until(lambda d: text in self.bar(),
                       message=f"{text!r} never reached the bar: {self.bar()!r}")
            self.assertEqual(self.bar(), [text])
            # laurel's process wrote the login session to this test's database.
            self.assertTrue(Session.objects.exists())

        def test_served_by_laurel_with_static_files(self):
            status, headers, body = http_get(self.host, self._port, "/")
            self.assertEqual(status, 200)
            self.assertEqual(headers["Server"], "laurel")
            self.assertIn(b"Hello from laurel", body)
            # ChannelsLiveServerTestCase wraps the application in ASGIStaticFilesHandler.
            status, headers, body = http_get(self.host, self._port, f"/static/{STATIC_NAME}")
            self.assertEqual(status, 200)
            self.assertEqual(body, STATIC_BODY)
            self.assertEqual(headers["Server"], "laurel")

    class DropInProcess(ChannelsLiveServerTestCase):
        """Channels' own test case; only the protocol server process is laurel's."""

        ProtocolServerProcess = LaurelProcess

        def test_http_and_websocket(self):
            import websockets

            self.assertIsInstance(self._server_process, LaurelProcess)
            self.assertTrue(self._server_process.is_alive())
            status, headers, body = http_get(self.host, self._port, "/")
            self.assertEqual((status, headers["Server"]), (200, "laurel"))

            async def echo():
                async with websockets.connect(
                        self.live_server_ws_url + "/echo-json/",
                        origin=self.live_server_url, open_timeout=10) as ws:
                    await ws.send(json.dumps({"n": 1, "via": "laurel"}))
                    return json.loads(await asyncio.wait_for(ws.recv(), 10))

            self.assertEqual(asyncio.run(echo()), {"n": 1, "via": "laurel"})

    class ProcessErrors(TransactionTestCase):
        """Servers that cannot start: LaurelProcess on its own, the way daphne's
        testing helpers drive DaphneProcess (start(), ready.wait(timeout), errors),
        and a LaurelLiveServerTestCase, which fails at once instead of hanging."""

        def test_failing_application_is_reported(self):
            # get_application() raises ZeroDivisionError inside laurel.
            proc = LaurelProcess("127.0.0.1", functools.partial(operator.truediv, 1, 0))
            proc.start()
            try:
                self.assertTrue(proc.ready.wait(30), "ready never set")
                exc, text = proc.errors.get(timeout=5)
                self.assertIsInstance(exc, ZeroDivisionError)
                self.assertIn("ZeroDivisionError", text)
                proc.join(15)
                self.assertFalse(proc.is_alive())
                self.assertNotEqual(proc.exitcode, 0)
            finally:
                proc.terminate()
                proc.join()

        def test_live_server_test_case_fails_with_the_traceback(self):
            class Broken(LaurelLiveServerTestCase):
                # make_application() calls static_wrapper(app): 1 / app, a TypeError
                static_wrapper = functools.partial(operator.truediv, 1)

                def test_nothing(self):
                    pass

            result = unittest.TestResult()
            Broken("test_nothing")(result)  # __call__: Django's _pre_setup runs there
            self.assertEqual(len(result.errors), 1, result.errors)
            text = result.errors[0][1]
            self.assertIn("laurel did not start", text)
            self.assertIn("TypeError", text)

    class _Runner(DiscoverRunner):
        def __init__(self, cases, **kwargs):
            super().__init__(**kwargs)
            self.cases = cases

        def build_suite(self, *args, **kwargs):
            suite = unittest.TestSuite()
            for case in self.cases:
                suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
            return suite

    cases = [globals()[name] for name in sys.argv[1:]] or [
        NotificationsInBrowser, DropInProcess, ProcessErrors]
    failures = _Runner(cases, verbosity=2, interactive=False).run_tests([])
    sys.exit(1 if failures else 0)
