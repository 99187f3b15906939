# laurel: a container image for Django Channels projects (docs/deployment.md).
#
#   docker build -t laurel .
#
# The image holds laurel, Django 3.2, Channels 4 and channels_redis, all from Debian 12.
# Use it as the base of your project's image:
#
#   FROM laurel
#   COPY . /app
#   CMD ["myproject.asgi:application"]
#
# laurel is the entrypoint and runs as PID 1: it forwards SIGTERM/SIGINT to its
# workers, drains them for --graceful-timeout, reaps orphaned processes and exits 0.
# No init (tini, dumb-init) is needed.

# ---------------------------------------------------------------- build stage
FROM debian:bookworm-slim AS build

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      gcc libc6-dev meson ninja-build pkg-config python3 python3-dev \
      libev-dev libwslay-dev node-llhttp libssl-dev libhiredis-dev libnghttp2-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the build reads (meson.build also declares the C unit tests and the tests'
# out-of-memory shim).
COPY meson.build meson_options.txt ./
COPY include/ include/
COPY src/ src/
COPY python/ python/
COPY tests/unit/ tests/unit/
COPY tests/shim/ tests/shim/
# test_cli's meson test reads the option tables of docs/cli.md
COPY docs/cli.md docs/

# The binary goes to /usr/local/bin, the laurel package and _laurel_layer to
# /usr/local/lib/python3.11/dist-packages (on Debian's python3 sys.path).
RUN meson setup build --buildtype=release --prefix=/usr/local \
 && ninja -C build \
 && meson install -C build --no-rebuild --strip --destdir /out \
 && find /out -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------- runtime stage
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 libev4 libwslay1 libssl3 libhiredis0.14 libnghttp2-14 zlib1g \
      python3-django python3-django-channels python3-channels-redis \
 && rm -rf /var/lib/apt/lists/*

COPY --from=build /out/ /

# A fixed, numeric, unprivileged user (Kubernetes' runAsNonRoot can check a number).
# /app stays owned by root: the application cannot rewrite its own code. Give it a
# volume for anything it must write (an SQLite database, uploads).
RUN groupadd --system --gid 10001 laurel \
 && useradd --system --uid 10001 --gid laurel --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin laurel

WORKDIR /app

# PORT: the container convention; platforms that set it (Cloud Run, Heroku) win.
# LAUREL_BIND: listen on every interface, not on the container's own loopback.
# Any other option can be set the same way: --workers is LAUREL_WORKERS, and so on.
ENV PORT=8000 \
    LAUREL_BIND=0.0.0.0 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

EXPOSE 8000
USER 10001:10001

ENTRYPOINT ["laurel"]
CMD ["myproject.asgi:application"]
