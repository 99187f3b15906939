"""Creates the benchmark's database: migrations, one Item, N users with one logged-in
session each. Prints {"sessions": {uid: session key}} as JSON.

    BENCH_DB=/tmp/x.sqlite3 /usr/bin/python3 -m site_bench.setup_db 1000   (from bench/django_site)
"""

import json
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "site_bench.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY  # noqa: E402
from django.contrib.auth.models import User  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import transaction  # noqa: E402

from site_bench.models import Item  # noqa: E402


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    call_command("migrate", verbosity=0)
    Item.objects.get_or_create(pk=1, defaults={"name": "the one item"})
    sessions = {}
    with transaction.atomic():
        for i in range(1, n + 1):
            user, _ = User.objects.get_or_create(id=i, defaults={"username": f"user{i}"})
            user.set_password("bench")
            user.save()
            s = SessionStore()
            s[SESSION_KEY] = str(user.pk)
            s[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
            s[HASH_SESSION_KEY] = user.get_session_auth_hash()
            s.create()
            sessions[user.pk] = s.session_key
    json.dump({"sessions": sessions}, sys.stdout)


if __name__ == "__main__":
    main()
