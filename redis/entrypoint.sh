#!/bin/sh
# entrypoint.sh ROLE [extra redis-server options...]
#
# The container entrypoint of every Redis service in docker-compose.yml, for
# the official redis image and the offline stand-in alike. ROLE is `master`,
# `replica` or `sentinel`.
#
# On the first start it renders ROLE's template from /evergreen (this folder,
# mounted read-only) into the data volume; on every later start it keeps the
# file there, because Redis and Sentinel rewrite it as the topology changes
# (the current master, `replicaof`, epochs, known peers). Re-rendering would
# bring back the initial master as "the master". Then it drops root and
# becomes the server.
set -eu

die() {
    echo "entrypoint.sh: $*" >&2
    exit 1
}

[ "$#" -ge 1 ] || die "usage: entrypoint.sh master|replica|sentinel [options...]"
role=$1
shift

case $role in
    master | replica)
        template=/evergreen/$role.conf.template
        config=${REDIS_DATA_DIR:?}/redis.conf
        set -- "$config" "$@"
        ;;
    sentinel)
        template=/evergreen/sentinel.conf.template
        config=${SENTINEL_DATA_DIR:?}/sentinel.conf
        set -- "$config" --sentinel "$@"
        ;;
    *) die "unknown role '$role'" ;;
esac

if [ -s "$config" ]; then
    echo "entrypoint.sh: keeping $config (rewritten by Redis/Sentinel at run time)"
else
    sh /evergreen/render.sh "$template" "$config"
    echo "entrypoint.sh: rendered $config from $template"
fi

# Both images create a `redis` user; the volume is root-owned when new.
if [ "$(id -u)" = 0 ]; then
    chown -R redis:redis "$(dirname "$config")"
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@"
fi
exec redis-server "$@"
