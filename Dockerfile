# syntax=docker/dockerfile:1
# action-relay image: `action-relay <command>` (worker, api, receiver, ...). Built by
# docker-compose.yml; runs as the unprivileged `node` user.

# --- build: every dependency, then TypeScript to dist/ ---
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are copied; the build runs below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY workers ./workers
COPY console ./console
# TypeScript to dist/, and the console's static assets to dist/console (npm run build).
RUN npm run build

# --- runtime: production dependencies and the compiled code only ---
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (tsc) is a build step, and TypeScript is not installed here.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/workers ./dist/workers
COPY --from=build /app/dist/console ./dist/console
COPY examples ./examples
USER node
# API (PORT), worker metrics (METRICS_PORT), mock receiver.
EXPOSE 8080 9464 4010
# Liveness of whichever command the container runs (compose sets its own, stricter checks):
# a worker answers on METRICS_PORT, the receiver on 4010, the api on PORT.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 CMD ["node", "-e", "const a=require('fs').readFileSync('/proc/1/cmdline','utf8').split('\\0');const p=a.includes('worker')?process.env.METRICS_PORT||9464:a.includes('receiver')?4010:process.env.PORT||8080;fetch('http://127.0.0.1:'+p+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/workers/action-relay.js"]
CMD ["--help"]
