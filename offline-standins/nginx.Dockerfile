# Stand-in for nginx:1.28.0-bookworm with Debian forky's nginx 1.30 (the
# shipped config's `server ... resolve` needs >= 1.27.3; Debian 12 has 1.22),
# laid out like the official image: conf.d/ included inside http {}, templates
# in /etc/nginx/templates rendered by the entrypoint, logs to stdout/stderr,
# curl for the healthcheck. The base is the debootstrap tree of forky with
# nginx, curl and gettext-base that scripts/lib.sh (modern_nginx) builds and
# scripts/docker-check imports: no package is installed here.
FROM evergreen-offline/nginx-forky-base:latest
# Temp files where the official image keeps them (/var/cache/nginx, an
# emptyDir in deploy/kubernetes, whose root filesystem is read-only), not in
# Debian's /var/lib/nginx.
RUN rm -f /etc/nginx/sites-enabled/default \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log \
    && rm -rf /var/lib/nginx && mkdir -p /var/cache/nginx \
    && chown www-data:www-data /var/cache/nginx && ln -s /var/cache/nginx /var/lib/nginx
COPY nginx-entrypoint.sh /docker-entrypoint.sh
ENTRYPOINT ["sh", "/docker-entrypoint.sh"]
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
