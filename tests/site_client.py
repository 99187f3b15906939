"""A browser-like HTTP client for the notifications example, shared by the Channels and
browser tests: keeps cookies, logs in through the login form, sends the CSRF token as
the page's JavaScript does."""

import http.client
import http.cookies
import json
import re
import urllib.parse

USERS = {"demo": "laurel-demo", "other": "laurel-other"}


class SiteClient:
    """A browser-like HTTP client: keeps cookies, logs in through the login form,
    sends the CSRF token as the page's JavaScript does."""

    def __init__(self, srv):
        self.srv = srv
        self.cookies = {}

    @property
    def origin(self):
        return f"http://127.0.0.1:{self.srv.port}"

    def cookie_header(self):
        return "; ".join(f"{k}={v}" for k, v in self.cookies.items())

    def request(self, method, path, fields=None, headers=None):
        h = {"Host": f"127.0.0.1:{self.srv.port}"}
        if self.cookies:
            h["Cookie"] = self.cookie_header()
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        h.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            for line in r.headers.get_all("Set-Cookie") or []:
                c = http.cookies.SimpleCookie()
                c.load(line)
                for name, morsel in c.items():
                    if morsel.value == "" or morsel["max-age"] == "0":
                        self.cookies.pop(name, None)
                    else:
                        self.cookies[name] = morsel.value
            return r.status, r.headers, data
        finally:
            conn.close()

    def login(self, username, password=None):
        status, _, body = self.request("GET", "/login/")
        assert status == 200, body[:500]
        token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
        status, headers, body = self.request(
            "POST", "/login/",
            {"username": username, "password": password or USERS[username],
             "csrfmiddlewaretoken": token.decode(), "next": "/"},
            headers={"Referer": self.origin + "/login/"})
        assert status == 302, (status, body[:500])
        assert headers["Location"] == "/"
        assert "sessionid" in self.cookies
        return self

    def post(self, path, csrf=True, **fields):
        headers = {"Referer": self.origin + "/"}
        if csrf and "csrftoken" in self.cookies:
            headers["X-CSRFToken"] = self.cookies["csrftoken"]
        return self.request("POST", path, fields, headers)

    def notify(self, text, path="/notify/"):
        status, _, body = self.post(path, text=text)
        assert status == 200, (status, body[:500])
        return json.loads(body)
