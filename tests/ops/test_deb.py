"""The Debian package (issue 12): debian/ builds with ``dpkg-buildpackage -us -uc -b``,
lintian has nothing to say beyond the explained overrides (debian/laurel.lintian-overrides),
and the .deb installs with apt into a fresh Debian 12 root (the base image of
tests/ops/base_image.sh, run with podman), serves, and is removed and purged without a
file left behind.

The version check runs in every ``make test``; the rest with LAUREL_OPS=1
(make test-ops).
"""

import gzip
import io
import os
import re
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.laurel_only
ops = pytest.mark.skipif(os.environ.get("LAUREL_OPS") != "1",
                         reason="the .deb tests run with make test-ops (LAUREL_OPS=1)")

BASE = "docker.io/library/debian:bookworm-slim"


def meson_version():
    return re.search(r"^\s*version:\s*'([^']+)'", (REPO / "meson.build").read_text(),
                     re.M).group(1)


def test_changelog_version_matches_meson():
    """One version: meson.build's project(version:), and debian/changelog agrees
    (the wheel and --version read meson's; tests/ops/test_wheel.py checks them)."""
    first = (REPO / "debian" / "changelog").read_text().splitlines()[0]
    m = re.fullmatch(r"laurel \(([^)]+)\) \S+; urgency=\S+", first)
    assert m, first
    assert m.group(1) == meson_version()  # native package: no Debian revision


def sh(*args, timeout=900, check=True, cwd=None):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd)
    if check:
        assert p.returncode == 0, f"{args}: {p.stdout[-4000:]}\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    for tool in ("dpkg-buildpackage", "lintian"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is not installed (make deps-ops)")
    top = tmp_path_factory.mktemp("deb")
    src = top / "laurel"
    src.mkdir()
    # The work tree as git sees it (tracked and new files, nothing ignored): the
    # package builds from a copy, since dpkg-buildpackage writes into the parent.
    files = sh("git", "ls-files", "-co", "--exclude-standard", "-z", cwd=REPO).stdout
    for rel in filter(None, files.split("\0")):
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    t0 = time.monotonic()
    sh("dpkg-buildpackage", "-us", "-uc", "-b", cwd=src)
    print(f"dpkg-buildpackage: {time.monotonic() - t0:.1f}s")
    debs = list(top.glob("laurel_*.deb"))
    assert len(debs) == 1, list(top.iterdir())
    return debs[0]


def deb_files(deb):
    data = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True,
                          check=True).stdout
    return tarfile.open(fileobj=io.BytesIO(data))


@ops
def test_deb_contents(deb):
    assert deb.name == f"laurel_{meson_version()}_amd64.deb"
    tf = deb_files(deb)
    names = {n.lstrip(".") for n in tf.getnames()}
    for f in ("/usr/bin/laurel", "/usr/lib/python3/dist-packages/laurel/__init__.py",
              "/usr/lib/python3/dist-packages/laurel/_version.py",
              "/usr/lib/python3/dist-packages/laurel/layers.py",
              "/usr/lib/python3/dist-packages/laurel/management/commands/runserver.py",
              "/lib/systemd/system/laurel@.service", "/lib/systemd/system/laurel@.socket",
              "/usr/share/man/man1/laurel.1.gz", "/usr/share/doc/laurel/copyright"):
        assert f in names, f
    assert [n for n in names if re.fullmatch(
        r"/usr/lib/python3/dist-packages/_laurel_(layer|loop)\.cpython-311-.*\.so", n)]
    assert not [n for n in names if "__pycache__" in n]
    # The man page is --help: every option is in it.
    man = gzip.decompress(tf.extractfile("./usr/share/man/man1/laurel.1.gz").read()).decode()
    assert man.startswith(".\\\" DO NOT MODIFY THIS FILE!") or ".TH LAUREL" in man
    for opt in ("venv", "workers", "graceful\\-timeout", "channel\\-layer"):
        assert f"\\-\\-{opt}" in man, opt
    info = sh("dpkg-deb", "-f", deb, "Version", "Depends").stdout
    assert f"Version: {meson_version()}" in info
    for dep in ("libev4", "libwslay1", "libssl3", "libhiredis0.14", "python3 (<< 3.12)"):
        assert dep in info, (dep, info)


@ops
def test_lintian_clean(deb):
    p = sh("lintian", "--fail-on", "error,warning", deb, check=False)
    tags = [ln for ln in p.stdout.splitlines() if re.match(r"[EW]: ", ln)]
    assert p.returncode == 0 and not tags, p.stdout + p.stderr


INSTALL_SCRIPT = r'''
set -e
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends /debs/@DEB@ >/dev/null
echo "BIN $(command -v laurel)"
laurel --version | head -1 | sed 's/^/VERSION /'
python3 -c "import laurel, _laurel_layer, _laurel_loop; print('PKG', laurel.__file__, laurel.__version__)"
python3 -m laurel --version | head -1 | sed 's/^/MVERSION /'
ls /lib/systemd/system/laurel@.service /lib/systemd/system/laurel@.socket | sed 's/^/UNIT /'
mkdir -p /srv/hello
printf '%s\n' 'async def app(scope, receive, send):' \
  '    if scope["type"] == "http":' \
  '        await send({"type": "http.response.start", "status": 200, "headers": []})' \
  '        await send({"type": "http.response.body", "body": b"hello from the deb"})' \
  > /srv/hello/hello.py
cd /srv/hello
laurel -p 8123 -v 0 hello:app & pid=$!
python3 - <<'PY'
import time, urllib.request
for _ in range(100):
    try:
        print("HTTP", urllib.request.urlopen("http://127.0.0.1:8123/", timeout=2).read().decode())
        break
    except OSError:
        time.sleep(0.1)
PY
kill -TERM $pid; wait $pid && echo "STOPPED 0"
cd /
apt-get remove -y -qq laurel >/dev/null
test ! -e /usr/bin/laurel && echo "REMOVED bin"
test ! -e /usr/lib/python3/dist-packages/laurel && echo "REMOVED pkg"
dpkg --purge laurel >/dev/null
dpkg -s laurel >/dev/null 2>&1 || echo "PURGED"
find / -xdev \( -path /proc -o -path /debs -o -path /srv \) -prune -o -name '*laurel*' -print | sed 's/^/LEFT /'
'''


@ops
def test_install_serve_remove_in_fresh_root(deb):
    """apt-get install of the .deb into a fresh Debian 12 root (a podman container of
    the debootstrap base image), a request served, then removal and purge."""
    from podman_env import podman_env
    if not shutil.which("podman"):
        pytest.fail("podman is not installed (make deps-ops)")
    sh("sh", REPO / "tests" / "ops" / "base_image.sh", BASE)
    prefix, run_args, _ = podman_env(BASE)
    script = INSTALL_SCRIPT.replace("@DEB@", deb.name)
    p = sh(*prefix, "run", "--rm", *run_args, "-v", f"{deb.parent}:/debs:ro", BASE,
           "sh", "-c", script, check=False, timeout=600)
    out = p.stdout
    assert p.returncode == 0, out[-3000:] + p.stderr[-3000:]
    v = meson_version()
    assert "BIN /usr/bin/laurel" in out
    assert f"VERSION laurel {v}" in out and f"MVERSION laurel {v}" in out
    assert f"PKG /usr/lib/python3/dist-packages/laurel/__init__.py {v}" in out
    assert out.count("UNIT ") == 2
    assert "HTTP hello from the deb" in out and "STOPPED 0" in out
    assert "REMOVED bin" in out and "REMOVED pkg" in out and "PURGED" in out
    assert "LEFT " not in out, out
