"""``python -m laurel ARGS``: runs the laurel server (the C executable) with ARGS.

The executable is the one installed with this package: the scripts directory of the
environment this Python runs in (a virtualenv's ``bin/``, where pip puts it), then the
directory of ``sys.executable``, then ``PATH``. It replaces this process, so signals,
the exit status and PID 1 in a container are the server's own.
"""

import os
import shutil
import sys
import sysconfig


def find_server():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable),
              # the Debian package: /usr/bin beside /usr/lib/python3/dist-packages
              os.path.join(here, "..", "..", "..", "..", "bin")):
        exe = os.path.join(d, "laurel")
        if os.path.isfile(exe) and os.access(exe, os.X_OK):
            return os.path.realpath(exe) if os.path.islink(exe) else exe
    return shutil.which("laurel")


def main():
    exe = find_server()
    if not exe:
        sys.stderr.write("laurel: error: the laurel executable is not installed beside "
                         "this Python package (looked in %s and on PATH)\n"
                         % sysconfig.get_path("scripts"))
        return 2
    os.execv(exe, ["laurel", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
