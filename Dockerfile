# stream-conductor: nginx and the daemon in one image (external mode: the entrypoint runs nginx,
# the daemon drives it). Build: docker build -t stream-conductor .
# Run:   docker run -e CONDUCTOR_TOKEN=<16+ chars> -p 5000:5000 -p 9000-9009:9000-9009 stream-conductor
FROM node:20-bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends nginx-light libnginx-mod-stream iproute2 \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /etc/nginx/sites-enabled/default \
 && npm install -g pnpm@10.34.9

WORKDIR /app
COPY package.json pnpm-lock.yaml pnpm-workspace.yaml tsconfig.base.json ./
COPY packages/shared/package.json packages/shared/
COPY packages/daemon/package.json packages/daemon/
COPY packages/cli/package.json packages/cli/
RUN pnpm install --frozen-lockfile

COPY packages packages
COPY docker docker
RUN pnpm run build \
 && CI=true pnpm install --frozen-lockfile --prod \
 && chmod +x docker/entrypoint.sh \
 && ln -s /app/packages/cli/bin/conductor.cjs /usr/local/bin/conductor

ENV CONDUCTOR_NGINX_MODE=external \
    CONDUCTOR_HOME=/var/lib/stream-conductor \
    STREAM_CONFIG_PATH=/etc/nginx/stream.d \
    NGINX_BIN=/usr/sbin/nginx \
    PORT_RANGE=9000-9009 \
    BIND_ADDRESS=0.0.0.0 \
    BIND_PORT=5000

VOLUME /var/lib/stream-conductor
EXPOSE 5000 9000-9009
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD node -e "fetch('http://127.0.0.1:'+(process.env.BIND_PORT||5000)+'/status').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["/app/docker/entrypoint.sh"]
