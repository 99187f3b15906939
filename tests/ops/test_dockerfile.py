"""Static checks of the container files and of docs/deployment.md.

The images are built and run with podman by tests/ops/test_container.py (make
test-ops). These tests guard, in every make test, what can be checked without that:

* both Dockerfiles (the repository's and examples/notifications/) are multi-stage on
  debian:bookworm-slim, install only Debian packages with apt (no curl, wget, pip, ADD
  of URLs, extra apt sources), run as a non-root user, have laurel as ENTRYPOINT;
* the build stage copies everything meson.build reads and nothing .dockerignore drops,
  and the runtime stage's packages provide every shared library the binary links to;
* every package exists in Debian 12's archive (when apt's lists are present);
* dockerfilelint (npm, installed by `make deps` when npm exists) finds no issue;
* docker-compose.yml builds that Dockerfile and keeps its timeouts consistent;
* every laurel flag and LAUREL_* variable in docs/deployment.md exists in `laurel --help`.
"""

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import LAUREL_BIN, REPO, sanitized

ROOT_DF = REPO / "Dockerfile"
EXAMPLE_DF = REPO / "examples" / "notifications" / "Dockerfile"
COMPOSE = REPO / "examples" / "notifications" / "docker-compose.yml"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOYMENT_DOC = REPO / "docs" / "deployment.md"
DOCKERFILES = [ROOT_DF, EXAMPLE_DF]
IDS = ["Dockerfile", "examples/notifications/Dockerfile"]

BASE = "debian:bookworm-slim"
BUILD_DEPS = {"meson", "ninja-build", "pkg-config", "gcc", "python3-dev", "libev-dev",
              "libwslay-dev", "node-llhttp", "libssl-dev", "libhiredis-dev", "libnghttp2-dev",
              "zlib1g-dev"}
RUNTIME_DEPS = {"python3", "libev4", "libwslay1", "libssl3", "libnghttp2-14", "zlib1g",
                "libhiredis0.14", "python3-django", "python3-django-channels", "python3-channels-redis"}
FORBIDDEN = [
    (r"\bcurl\b", "curl"), (r"\bwget\b", "wget"), (r"\bpip3?\b", "pip"),
    (r"\beasy_install\b", "easy_install"), (r"\bnpm\b", "npm"), (r"\bgit\s+clone\b", "git clone"),
    (r"add-apt-repository|apt-key|/etc/apt/sources|signed-by", "extra apt sources"),
    (r"\bdpkg\s+-i\b|\.deb\b", "a .deb from outside the archive"),
    (r"\bsudo\b", "sudo"), (r"https?://", "a download"),
]


# --------------------------------------------------------------------------- parsing

class Instr:
    def __init__(self, line, cmd, args):
        self.line, self.cmd, self.args = line, cmd, args

    def json_args(self):
        try:
            v = json.loads(self.args)
        except ValueError:
            return None
        return v if isinstance(v, list) else None

    def __repr__(self):
        return f"{self.line}: {self.cmd} {self.args}"


def parse(path):
    """Instructions with continuation lines joined and comments dropped."""
    out, buf, start = [], "", None
    for n, raw in enumerate(Path(path).read_text().splitlines(), 1):
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue  # a comment inside a continued instruction
        if start is None:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        cmd, _, args = buf.partition(" ")
        out.append(Instr(start, cmd.upper(), args.strip()))
        buf, start = "", None
    assert not buf, f"{path}: unterminated continuation line"
    return out


def stages(instrs):
    """[(from_instr, [instrs])] per stage."""
    out = []
    for i in instrs:
        if i.cmd == "FROM":
            out.append((i, []))
        else:
            assert out, f"{i} before the first FROM"
            out[-1][1].append(i)
    return out


def apt_installs(instrs):
    """Packages named by `apt-get install` in these RUN instructions."""
    pkgs = set()
    for i in instrs:
        if i.cmd != "RUN":
            continue
        for part in re.split(r"&&|;|\|\|", i.args):
            words = shlex.split(part)
            if "apt-get" in words and "install" in words:
                after = words[words.index("install") + 1:]
                pkgs |= {w for w in after if not w.startswith("-")}
    return pkgs


def stage_text(instrs):
    return "\n".join(f"{i.cmd} {i.args}" for i in instrs)


# --------------------------------------------------------------------------- Dockerfiles

@pytest.fixture(params=DOCKERFILES, ids=IDS)
def dockerfile(request):
    assert request.param.is_file(), f"{request.param} is missing"
    return request.param


def test_multi_stage_bookworm(dockerfile):
    st = stages(parse(dockerfile))
    assert len(st) >= 2, "expected a build stage and a runtime stage"
    for frm, _ in st:
        image = frm.args.split()[0]
        assert image == BASE, f"{frm}: every stage must start from {BASE}"
    names = [frm.args.split()[2] for frm, _ in st if len(frm.args.split()) == 3]
    assert "build" in names, "the first stage is named `build`"
    final = st[-1][1]
    copies = [i for i in final if i.cmd == "COPY" and "--from=build" in i.args]
    assert copies and copies[0].args.split()[1:] == ["/out/", "/"], \
        "the runtime stage copies the staged install (/out) from the build stage"


def test_build_stage(dockerfile):
    frm, instrs = stages(parse(dockerfile))[0]
    pkgs = apt_installs(instrs)
    assert BUILD_DEPS <= pkgs, f"build stage lacks {BUILD_DEPS - pkgs}"
    runs = stage_text(instrs)
    assert re.search(r"meson setup build\b", runs)
    assert re.search(r"ninja -C build\b", runs)
    assert re.search(r"meson install -C build .*--destdir /out", runs), \
        "meson install --destdir /out"


def test_runtime_stage(dockerfile):
    instrs = stages(parse(dockerfile))[-1][1]
    pkgs = apt_installs(instrs)
    assert RUNTIME_DEPS <= pkgs, f"runtime stage lacks {RUNTIME_DEPS - pkgs}"
    heavy = {p for p in pkgs if p.endswith("-dev") or p in ("gcc", "meson", "ninja-build",
                                                            "build-essential", "node-llhttp")}
    assert not heavy, f"build tools in the runtime image: {heavy}"

    users = [i for i in instrs if i.cmd == "USER"]
    assert users, "the runtime stage must switch to a non-root USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), f"{users[-1]}: runs as root"
    after_user = instrs[instrs.index(users[-1]) + 1:]
    assert not [i for i in after_user if i.cmd in ("RUN", "USER")], \
        "nothing runs after the final USER"
    if not user.isdigit():
        assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", stage_text(instrs))
    else:
        assert re.search(rf"useradd\b.*--uid {user}\b", stage_text(instrs)), \
            f"USER {user} is created with useradd --uid"

    def last(cmd):
        found = [i for i in instrs if i.cmd == cmd]
        assert found, f"no {cmd} in the runtime stage"
        return found[-1]
    ep = last("ENTRYPOINT").json_args()
    assert ep == ["laurel"], f"ENTRYPOINT must be the exec form [\"laurel\"], not {ep}"
    cmd = last("CMD").json_args()
    assert cmd and re.fullmatch(r"[\w.]+:[\w.]+", cmd[-1]), \
        f"CMD (exec form) ends with the application module:attribute: {cmd}"
    assert last("WORKDIR").args == "/app"
    assert "8000" in last("EXPOSE").args.split()
    env = " ".join(i.args for i in instrs if i.cmd == "ENV")
    assert re.search(r"\bPORT=8000\b", env) and re.search(r"\bLAUREL_BIND=0\.0\.0\.0\b", env)


def test_only_debian_packages(dockerfile):
    instrs = parse(dockerfile)
    for i in instrs:
        assert i.cmd != "ADD", f"{i}: use COPY (ADD fetches URLs and unpacks archives)"
        if i.cmd != "RUN":
            continue
        for pat, what in FORBIDDEN:
            assert not re.search(pat, i.args), f"{dockerfile.name}:{i.line}: {what} in {i.args}"
        if "apt-get install" in i.args:
            assert "apt-get update" in i.args, f"{i}: update and install in one RUN"
            assert "--no-install-recommends" in i.args and re.search(r"\s-y\b", i.args), i
            assert "rm -rf /var/lib/apt/lists/*" in i.args, f"{i}: clean apt's lists"
        assert not re.search(r"\bapt\s", i.args), f"{i}: use apt-get in scripts, not apt"


def test_build_stages_identical():
    """The example repeats the repository's build stage; they must not drift apart."""
    a = stages(parse(ROOT_DF))[0]
    b = stages(parse(EXAMPLE_DF))[0]
    assert stage_text([a[0], *a[1]]) == stage_text([b[0], *b[1]])
    assert apt_installs(stages(parse(ROOT_DF))[-1][1]) == \
        apt_installs(stages(parse(EXAMPLE_DF))[-1][1])


def _copy_sources(instrs):
    out = []
    for i in instrs:
        if i.cmd == "COPY" and "--from=" not in i.args:
            words = i.json_args() or i.args.split()
            out += [w.rstrip("/") or "." for w in words[:-1] if not w.startswith("--")]
    return out


def test_build_stage_copies_what_meson_reads():
    copied = _copy_sources(stages(parse(ROOT_DF))[0][1])
    for c in copied:
        assert (REPO / c).exists(), f"COPY {c}: no such path in the repository"
    # every repository path that meson.build names must be inside what is copied
    text = (REPO / "meson.build").read_text()
    named = set(re.findall(r"'((?:src|include|python|tests)/[^']+)'", text))
    named |= {f"tests/unit/test_{t}.c" for t in
              re.findall(r"'(\w+)'", re.search(r"foreach t : \[([^\]]*)\]", text).group(1))}
    assert named, "meson.build parse found no paths"
    for n in sorted(named):
        assert any(n == c or n.startswith(c + "/") for c in copied), \
            f"meson.build reads {n}, which the build stage does not COPY"


def _ignored(path, patterns):
    """Docker's .dockerignore rule, simplified: the last matching pattern wins; a
    pattern matches the path or any of its parent directories."""
    parts = path.split("/")
    candidates = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.strip("/")
        if p.startswith("**/"):
            hit = any(fnmatch.fnmatchcase(c.split("/")[-1], p[3:]) or fnmatch.fnmatchcase(c, p[3:])
                      for c in candidates)
        else:
            hit = any(fnmatch.fnmatchcase(c, p) and c.count("/") == p.count("/")
                      for c in candidates)
        if hit:
            result = not neg
    return result


# Inside copied directories, left out of the context on purpose.
MEANT_TO_BE_LEFT_OUT = {"examples/notifications/db.sqlite3",
                        "examples/notifications/Dockerfile",
                        "examples/notifications/docker-compose.yml"}


def test_dockerignore_keeps_what_is_copied():
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.strip().startswith("#")]
    for df in DOCKERFILES:
        for src in _copy_sources(parse(df)):
            base = REPO / src
            files = [base] if base.is_file() else [f for f in base.rglob("*") if f.is_file()]
            files = [f for f in files if "__pycache__" not in f.parts and f.suffix != ".pyc"
                     and f.relative_to(REPO).as_posix() not in MEANT_TO_BE_LEFT_OUT]
            assert files, f"{df.name}: COPY {src} copies nothing"
            for f in files:
                rel = f.relative_to(REPO).as_posix()
                assert not _ignored(rel, patterns), f"{df.name}: {rel} is excluded by .dockerignore"
    for junk in ("build/laurel", ".git/config", "build-asan/laurel",
                 "examples/notifications/db.sqlite3", "tests/http/test_body.py"):
        assert _ignored(junk, patterns), f".dockerignore should exclude {junk}"


def _apt_lists_present():
    return any(Path("/var/lib/apt/lists").glob("*_Packages*"))


def test_packages_exist_in_debian():
    if not shutil.which("apt-cache") or not _apt_lists_present():
        pytest.skip("apt-cache or apt's package lists (apt-get update) not available")
    pkgs = set()
    for df in DOCKERFILES:
        pkgs |= apt_installs(parse(df))
    r = subprocess.run(["apt-cache", "policy", *sorted(pkgs)], capture_output=True, text=True)
    missing = re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: \(none\)", r.stdout, re.M)
    listed = set(re.findall(r"^(\S+):$", r.stdout, re.M))
    assert not missing and pkgs <= listed, \
        f"not in the configured Debian archive: {sorted(set(missing) | (pkgs - listed))}"


def test_runtime_packages_provide_the_binary_libraries():
    """Every library the built binary links to comes from a package that the runtime
    stage installs, directly or as a dependency."""
    binary = REPO / "build" / "laurel"  # the plain build, as in the image (not ASan's)
    if not binary.is_file():
        binary = LAUREL_BIN
    if not binary.is_file():
        pytest.skip(f"{binary} not built")
    if not shutil.which("apt-cache") or not _apt_lists_present():
        pytest.skip("apt-cache or apt's package lists not available")
    if sanitized(binary):
        pytest.skip(f"{binary} is a sanitizer build")
    ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True).stdout
    pkgs = apt_installs(stages(parse(ROOT_DF))[-1][1])
    r = subprocess.run(["apt-cache", "depends", "--recurse", "--no-recommends",
                        "--no-suggests", "--no-conflicts", "--no-breaks", "--no-replaces",
                        "--no-enhances", *sorted(pkgs)], capture_output=True, text=True)
    closure = {ln.strip() for ln in r.stdout.splitlines() if ln and not ln.startswith(" ")}
    closure |= pkgs
    libs = re.findall(r"=>\s+(/\S+)", ldd)
    assert libs, ldd
    for lib in libs:
        cands = [lib, str(Path(lib).resolve())]
        cands += [c.replace("/usr/lib/", "/lib/", 1) for c in cands if c.startswith("/usr/lib/")]
        cands += [c.replace("/lib/", "/usr/lib/", 1) for c in cands if c.startswith("/lib/")]
        owner = None
        for c in cands:
            d = subprocess.run(["dpkg", "-S", c], capture_output=True, text=True)
            if d.returncode == 0:
                owner = d.stdout.split(":")[0]
                break
        assert owner, f"no Debian package owns {lib}"
        assert owner in closure, f"{lib} comes from {owner}, which the runtime stage lacks"


def test_dockerfilelint():
    exe = shutil.which("dockerfilelint")
    if not exe:
        pytest.skip("dockerfilelint not installed (make deps installs it when npm exists)")
    r = subprocess.run([exe, "-j", *map(str, DOCKERFILES)], capture_output=True, text=True,
                       timeout=60)
    report = json.loads(r.stdout)
    issues = [(f["file"], i) for f in report["files"] for i in f["issues"]]
    assert report["totalIssues"] == 0 and r.returncode == 0, json.dumps(issues, indent=1)


# --------------------------------------------------------------------------- compose

def _seconds(v):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", str(v))
    assert m, v
    n = float(m.group(1))
    return {"ms": n / 1000, "m": n * 60}.get(m.group(2), n)


def test_compose_file():
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(COMPOSE.read_text())
    web, redis = doc["services"]["web"], doc["services"]["redis"]
    ctx = (COMPOSE.parent / web["build"]["context"]).resolve()
    assert ctx == REPO, f"the build context must be the repository root, not {ctx}"
    assert (ctx / web["build"]["dockerfile"]).resolve() == EXAMPLE_DF
    env = web["environment"]
    url = env["NOTIFICATIONS_REDIS_URL"]
    assert re.fullmatch(r"redis://redis:6379/\d+", url), url
    assert "NOTIFICATIONS_REDIS_URL" in (REPO / "examples/notifications/notifications/settings.py").read_text()
    assert "redis" in web["depends_on"]
    assert int(env.get("LAUREL_WORKERS", "1")) >= 1
    grace = float(env.get("LAUREL_GRACEFUL_TIMEOUT", "10"))
    assert _seconds(web["stop_grace_period"]) > grace, \
        "stop_grace_period must exceed --graceful-timeout, or docker SIGKILLs mid-drain"
    for p in web.get("ports", []):
        assert str(p).startswith("127.0.0.1:"), f"publish on loopback only in the demo: {p}"
    assert redis["image"].split(":")[-1].endswith("bookworm") or "bookworm" in redis["image"]


# --------------------------------------------------------------------------- docs

def _help_flags():
    if not LAUREL_BIN.is_file():
        pytest.skip(f"{LAUREL_BIN} not built")
    out = subprocess.run([str(LAUREL_BIN), "--help"], capture_output=True, text=True,
                         timeout=10).stdout
    flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*|-[a-zA-Z])(?![\w-])", out))
    assert "--workers" in flags and "-p" in flags, out
    return flags


def _doc_code():
    text = DEPLOYMENT_DOC.read_text()
    return re.findall(r"```[a-z]*\n(.*?)```", text, re.S), text


def test_deployment_doc_flags_exist():
    flags = _help_flags()
    blocks, _ = _doc_code()
    assert blocks, "docs/deployment.md has no code blocks"
    seen = 0
    for block in blocks:
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            m = re.search(r"(?:^|[\s=\"'])(?:\S*/)?laurel((?:\s+-\S+(?:\s+(?!-)\S+)?)+)", line)
            if not m:
                continue
            for tok in m.group(1).split():
                if tok.startswith("-") and tok != "-":
                    name = tok.split("=")[0]
                    assert name in flags, f"docs/deployment.md: `{name}` is not a laurel " \
                                          f"flag (laurel --help): {line.strip()}"
                    seen += 1
    assert seen >= 10, f"only {seen} laurel flags found in the docs' code: parser broken?"


# Long flags of other tools that the deployment page uses.
OTHER_TOOLS_FLAGS = {"--build", "--destdir", "--now", "--rm", "--stop-timeout",
                     # podman and debootstrap (the container tests)
                     "--runtime", "--ulimit", "--variant"}


def test_deployment_doc_every_long_flag_exists():
    """Prose and commands alike: any --flag on the page is laurel's (or another tool's
    from a short, reviewed list)."""
    flags = _help_flags()
    _, text = _doc_code()
    for name in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", text))):
        if name in OTHER_TOOLS_FLAGS or name == "--foo-bar":
            continue
        assert name in flags, f"docs/deployment.md mentions {name}, not in laurel --help"


def test_deployment_doc_env_vars_exist():
    flags = _help_flags()
    _, text = _doc_code()
    names = set(re.findall(r"\bLAUREL_[A-Z0-9_]+\b", text))
    assert names
    for n in sorted(names):
        if n in ("LAUREL_APPLICATION",):
            continue
        opt = "--" + n[len("LAUREL_"):].lower().replace("_", "-")
        assert opt in flags or opt.replace("-", "_") in flags, \
            f"docs/deployment.md: {n} names no option ({opt} is not in laurel --help)"
