# syntax=docker/dockerfile:1.7
#
# One image for every role: `sfu`, `bridge` (appservice + token service) or `embedded` (both in
# one process, what `npm start` runs). The command picks the role:
#
#   docker run IMAGE sfu --config /etc/matrix-rtc/sfu.yaml       (or LIVEKIT_CONFIG / LIVEKIT_KEYS)
#   docker run IMAGE bridge [--config /etc/matrix-rtc/bridge.yaml]   (lk-jwt-service's LIVEKIT_* env)
#   docker run --network host IMAGE embedded                     (trial only: loopback, dev keys)
#   docker run IMAGE sfu --config FILE --validate                (check a config, exit 0/1)
#
# There is no build step: Node 24 runs the TypeScript sources directly (type stripping), so the
# image is the sources plus production dependencies. `npm ci --omit=dev` leaves out the `node`
# devDependency the repository pins for development; the base image's Node 24 takes its place.

ARG NODE_IMAGE=node:24-slim

# --- stage 1: production dependencies, exactly as package-lock.json says ----------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No production dependency has an install script; --ignore-scripts keeps it that way.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force

# --- stage 2: runtime ------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    MATRIX_RTC_DATA_DIR=/var/lib/matrix-rtc
WORKDIR /app

COPY --from=deps /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY common ./common
COPY sfu ./sfu
COPY bridge ./bridge
COPY embedded ./embedded
COPY config ./config
COPY synapse-dev/trial-setup.ts ./synapse-dev/trial-setup.ts

# Role dispatcher. `exec` makes Node PID 1, so `docker stop` delivers SIGTERM to it directly
# (each main.ts closes its listeners on SIGTERM/SIGINT and exits 0).
COPY --chmod=0755 <<'EOF' /usr/local/bin/matrix-rtc
#!/bin/sh
set -eu
role="${1:-}"
[ $# -gt 0 ] && shift
case "$role" in
  sfu)      exec node --max-semi-space-size=8 /app/sfu/main.ts "$@" ;;
  bridge)   exec node /app/bridge/main.ts "$@" ;;
  embedded) exec node --max-semi-space-size=8 /app/embedded/main.ts --data-dir "$MATRIX_RTC_DATA_DIR" "$@" ;;
  trial-setup) exec node /app/synapse-dev/trial-setup.ts "$@" ;;
  *)
    echo "usage: matrix-rtc sfu|bridge|embedded [options]   (see README.md)" >&2
    [ -n "$role" ] && echo "unknown role: $role" >&2
    exit 2 ;;
esac
EOF

# Health check without curl (not in -slim): GET each URL in HEALTHCHECK_URLS (space separated)
# and pass if any answers 2xx. The default covers the default ports of every role (SFU 7880,
# bridge 8080); set HEALTHCHECK_URLS when you change LIVEKIT_JWT_BIND or the SFU `port`.
COPY --chmod=0755 <<'EOF' /usr/local/bin/matrix-rtc-healthcheck
#!/usr/bin/env node
const urls = (process.env.HEALTHCHECK_URLS || 'http://127.0.0.1:7880/healthz http://127.0.0.1:8080/healthz').split(/\s+/).filter(Boolean);
const probe = (u) => fetch(u, { signal: AbortSignal.timeout(2000) }).then((r) => r.ok, () => false);
Promise.all(urls.map(probe)).then((ok) => process.exit(ok.some(Boolean) ? 0 : 1));
EOF

RUN mkdir -p "$MATRIX_RTC_DATA_DIR" /etc/matrix-rtc /run/matrix-rtc \
 && chown node:node "$MATRIX_RTC_DATA_DIR" /run/matrix-rtc

# The `node` user (uid 1000) of the base image; nothing runs as root.
USER node

# 7880: SFU signalling + RoomService API; 8080: token service + appservice API.
# 50000-60000/udp: the SFU's default rtc.port_range_start/end (media).
EXPOSE 7880/tcp 8080/tcp 50000-60000/udp

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["matrix-rtc-healthcheck"]

# No default role: `docker run IMAGE` prints the usage. The embedded mode binds loopback and
# advertises it as the media address, so it is only useful with --network host on the same
# machine as the browser; use the `sfu` and `bridge` roles anywhere else.
ENTRYPOINT ["matrix-rtc"]
