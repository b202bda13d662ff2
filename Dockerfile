# syntax=docker/dockerfile:1
# action-relay image: `action-relay <command>` (worker, api, receiver, ...). Built by
# docker-compose.yml; runs as the unprivileged `node` user.

# --- build: every dependency, then TypeScript to dist/ ---
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` would build before the sources are copied; the build runs below.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY workers ./workers
RUN npx tsc -p tsconfig.json

# --- runtime: production dependencies and the compiled code only ---
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` (tsc) is a build step, and TypeScript is not installed here.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
COPY --from=build /app/dist/workers ./dist/workers
COPY examples ./examples
USER node
# API (PORT), worker metrics (METRICS_PORT), mock receiver.
EXPOSE 8080 9464 4010
ENTRYPOINT ["node", "dist/workers/action-relay.js"]
CMD ["--help"]
