#!/bin/sh
# Makes the Dockerfiles' base image, debian:bookworm-slim, from Debian's archive when no
# container registry is reachable: debootstrap --variant=minbase of bookworm from the
# mirror this machine's apt uses, trimmed as the slim image is (no docs, man pages or
# locales; apt lists removed), imported into podman under the Dockerfiles' FROM name.
# The root filesystem is cached as a tarball (LAUREL_CI_CACHE, /var/cache/laurel-ci),
# so a rerun only imports it. Usage: base_image.sh [TAG]
set -eu
TAG=${1:-docker.io/library/debian:bookworm-slim}
CACHE=${LAUREL_CI_CACHE:-/var/cache/laurel-ci}
TAR=$CACHE/bookworm-minbase.tar

if podman image exists "$TAG"; then
  echo "base_image: $TAG is there"
  exit 0
fi

# The first mirror of bookworm in apt's sources (one-line or deb822 format).
mirror() {
  suite=$1 default=$2
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    u=$(awk -v s="$suite" '
      /^deb / && $3 == s { print $2; exit }
      /^URIs:/ { uri = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) { print uri; exit } }' "$f")
    if [ -n "$u" ]; then echo "$u"; return; fi
  done
  echo "$default"
}

if [ ! -s "$TAR" ]; then
  MAIN=$(mirror bookworm http://deb.debian.org/debian)
  SECURITY=$(mirror bookworm-security http://deb.debian.org/debian-security)
  ROOT=$CACHE/rootfs.tmp
  mkdir -p "$CACHE"
  rm -rf "$ROOT"
  echo "base_image: debootstrap --variant=minbase bookworm from $MAIN"
  debootstrap --variant=minbase bookworm "$ROOT" "$MAIN" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log"; exit 1; }
  cat >"$ROOT/etc/apt/sources.list" <<SOURCES
deb $MAIN bookworm main
deb $MAIN bookworm-updates main
deb $SECURITY bookworm-security main
SOURCES
  # What the slim image leaves out, now and for packages installed later.
  cat >"$ROOT/etc/dpkg/dpkg.cfg.d/slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
SLIM
  find "$ROOT/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/locale/* \
    "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/log/*.log
  tar -C "$ROOT" --numeric-owner -cf "$TAR.tmp" .
  mv "$TAR.tmp" "$TAR"
  rm -rf "$ROOT"
fi
podman import --change 'CMD ["bash"]' "$TAR" "$TAG" >/dev/null
echo "base_image: imported $TAR as $TAG"
