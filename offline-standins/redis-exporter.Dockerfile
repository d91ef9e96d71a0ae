# Stand-in for oliver006/redis_exporter:*-alpine (Debian 12's 1.45): the
# exporter as entrypoint, configured by flags, REDIS_USER and REDIS_PASSWORD; wget for the
# healthcheck (busybox's in the alpine image).
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-redis-exporter wget \
    && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/usr/bin/prometheus-redis-exporter"]
