"""How podman runs containers on this machine, found by trying (tests/ops, make test-ops).

podman as packaged by Debian 12 starts a container with crun and raises the container's
RLIMIT_NOFILE and RLIMIT_NPROC to large defaults. A sandbox may refuse either: crun
refuses hybrid cgroup v1/v2 hierarchies, and raising a limit needs CAP_SYS_RESOURCE.
podman_env() tries podman's defaults first, then runc and limits no higher than this
process's, and records each refusal word for word, so the report says what refused.
"""

import resource
import shutil
import subprocess

_CACHE = {}


def _try(cmd_prefix, run_args, image):
    p = subprocess.run([*cmd_prefix, "run", "--rm", *run_args, image, "true"],
                       capture_output=True, text=True, timeout=120)
    return p.returncode, (p.stderr.strip().splitlines() or [""])[-1]


def podman_env(image):
    """(global args, run args, refusals): the podman invocation that runs image here,
    and the error lines of the ways that were refused. Raises RuntimeError when none
    works."""
    if image in _CACHE:
        return _CACHE[image]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    limits = ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=4096:4096"]
    ways = [(["podman"], [])]
    if shutil.which("runc"):
        ways.append((["podman", "--runtime", "runc"], []))
    ways.append((["podman"], limits))
    if shutil.which("runc"):
        ways.append((["podman", "--runtime", "runc"], limits))
    refusals = []
    for prefix, run_args in ways:
        rc, err = _try(prefix, run_args, image)
        if rc == 0:
            _CACHE[image] = (prefix, run_args, refusals)
            return _CACHE[image]
        refusals.append(f"{' '.join(prefix + ['run'] + run_args)}: {err}")
    raise RuntimeError("podman cannot run a container here:\n" + "\n".join(refusals))
