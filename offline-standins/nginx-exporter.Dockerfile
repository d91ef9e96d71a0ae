# Stand-in for nginx/nginx-prometheus-exporter (Debian 12's 0.11). Its Go
# flags accept the official image's `--nginx.scrape-uri=...` spelling.
FROM debian:bookworm-slim
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-nginx-exporter \
    && rm -rf /var/lib/apt/lists/*
USER nobody
ENTRYPOINT ["/usr/bin/prometheus-nginx-exporter"]
