# syntax=docker/dockerfile:1
# jwtedge reference edge app. The build stage bakes the issuer's public keys
# into an env file (fail closed: no keys, no image); the runtime stage is slim,
# runs as a non-root user and verifies tokens with zero calls to the issuer.
#
#   docker build --build-arg ISSUER=https://id.example.com -t jwtedge .
#   docker run -e APP_CONFIG_AUTH__AUDIENCE=api -e APP_CONFIG_AUTH__CLIENT_ID=web \
#              -e APP_CONFIG_LOGIN__STATE_KEY=... -p 8000:8000 jwtedge
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY verifier ./verifier
COPY deploy ./deploy
RUN python -m venv /opt/jwtedge \
    && /opt/jwtedge/bin/pip install --no-cache-dir .
ARG ISSUER
# Fail closed: `jwtedge bake` exits 3 (and the build stops) when the issuer
# cannot be reached or publishes no usable signing key.
RUN test -n "${ISSUER}" || { echo "build with --build-arg ISSUER=https://your-issuer" >&2; exit 2; } \
    && /opt/jwtedge/bin/jwtedge bake --issuer "${ISSUER}" --env-file /opt/jwtedge/app.env

FROM python:${PYTHON_VERSION}-slim AS runtime
# The issuer the keys were baked from is the one the app trusts.
ARG ISSUER
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=build /opt/jwtedge /opt/jwtedge
# The bake writes the env file with mode 0600: hand it to the user that reads it.
COPY --from=build --chown=10001:10001 /opt/jwtedge/app.env /etc/jwtedge/app.env
ENV PATH=/opt/jwtedge/bin:${PATH} \
    APP_CONFIG_AUTH__ISSUER=${ISSUER} \
    APP_CONFIG_ENV_FILE=/etc/jwtedge/app.env \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
# --proxy-headers: behind a TLS-terminating proxy the app sees https, so
# cookies stay Secure (set --forwarded-allow-ips to the proxy's address).
CMD ["jwtedge", "serve", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
