"""``manage.py demo_setup``: migrates the database and makes sure the demo users exist
with their documented passwords (safe to run any number of times)."""

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERS = [
    ("demo", "laurel-demo"),
    ("other", "laurel-other"),
]


class Command(BaseCommand):
    help = "Migrate and create the demo users demo/laurel-demo and other/laurel-other."

    def handle(self, *args, **options):
        verbosity = options["verbosity"]
        call_command("migrate", interactive=False, verbosity=max(0, verbosity - 1))
        User = get_user_model()
        for username, password in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created or not user.check_password(password) or not user.is_active:
                user.set_password(password)
                user.is_active = True
                user.save()
            if verbosity:
                what = "created" if created else "ready"
                self.stdout.write(f"user {username!r} {what} (password {password!r})")
