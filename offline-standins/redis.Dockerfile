# Stand-in for redis:7.0.15-bookworm: Debian 12's Redis is 7.0.15 too.
# docker-compose.yml runs redis/entrypoint.sh, which needs redis-server,
# redis-cli, setpriv and a `redis` user: Debian's packages provide them all.
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        redis-server redis-sentinel redis-tools \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
WORKDIR /data
CMD ["redis-server"]
