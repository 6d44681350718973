# snapcoord node image. The ENTRYPOINT is the snapcoord CLI, so a container's
# command is its arguments (`serve ...`, `cluster status --endpoint ...`).
#
# Two stages: `npm run build` needs dev dependencies (buf + ts-proto generate
# src/gen, typescript compiles to dist/, esbuild bundles the client commands),
# the compiled CLI does not. dist/ was
# checked to run with production dependencies only (`npm prune --omit=dev`,
# then `node dist/src/cli/main.js --help` and `serve`); it also needs proto/
# (gRPC reflection) and package.json (version, proto lookup) beside it.

FROM node:20-slim AS build
WORKDIR /app
# rocksdb ships a prebuilt binary for linux-x64 only; elsewhere (arm64) node-gyp compiles it.
RUN if [ "$(uname -m)" != "x86_64" ]; then \
      apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*; \
    fi
COPY package.json package-lock.json ./
# npm ci runs `prepare` (buf generate), which needs the protos and buf's config.
COPY buf.yaml buf.gen.yaml tsconfig.json ./
COPY proto ./proto
RUN npm ci --no-audit --no-fund
COPY src ./src
# npm run build ends with scripts/bundle-cli.ts: the client commands' one-file bundle and its V8 code cache,
# made here under the ENTRYPOINT's V8 flags (V8 rejects a cache made under others, and the node user cannot
# write it again in dist/).
COPY scripts ./scripts
RUN BUNDLE_CLI_NODE_FLAGS="--max-semi-space-size=4 --initial-old-space-size=64" npm run build && npm prune --omit=dev --no-audit --no-fund

FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/proto ./proto
COPY --from=build /app/dist/src ./dist/src
# Data (and, in docker-compose.yml, snapshots) live in /data, certificates in /tls, owned by the unprivileged user.
RUN mkdir -p /data/snapshots /tls && chown -R node:node /data /tls && chmod 0700 /data /tls
USER node
VOLUME ["/data"]
# 7001 client gRPC, 7101 peer gRPC (Raft), 8108 HTTP(S) gateway.
EXPOSE 7001 7101 8108
# A node's memory settings (src/cli/node-runtime.ts, README "Operations guide: Memory"): glibc gives freed
# native memory back, from one arena for all threads. Read at process start, so set here.
ENV MALLOC_MMAP_THRESHOLD_=131072 MALLOC_TRIM_THRESHOLD_=131072 MALLOC_ARENA_MAX=1
# The CLI by its absolute path: `docker run -w DIR` (README: make-secrets.sh with -w /w) changes the working directory.
ENTRYPOINT ["node", "--max-semi-space-size=4", "--initial-old-space-size=64", "/app/dist/src/cli/main.js"]
CMD ["--help"]
