#!/bin/sh
# kubernetes-init.sh data|sentinel
#
# The init container of the Redis and Sentinel StatefulSets
# (deploy/kubernetes/base). On a pod's first start (empty volume) it renders
# the pod's config from the same templates compose uses, with render.sh; on
# later starts it keeps the file, which Redis and Sentinel rewrite at run time
# (the current master, epochs, known peers), as entrypoint.sh does in compose.
#
# Addresses: every pod has a ClusterIP Service of its own, named like the pod
# (redis-0, sentinel-2). Its virtual IP outlives the pod: a deleted or
# rescheduled pod comes back at a new pod IP behind the same VIP, and the
# VIP's name never stops resolving. Nodes and Sentinels announce that VIP,
# and Sentinel knows addresses only (resolve-hostnames no), as with compose's
# fixed container addresses: no Sentinel waits on a name that vanished.
#
# The master to follow: the one a Sentinel names, once that node itself says
# it is the master; when no Sentinel answers (the very first start), the
# first pod (FIRST_MASTER). When Sentinels answer but name no master that
# confirms it (a failover under way, or they name this very pod, whose data
# is gone), the script fails and Kubernetes runs it again: starting as a
# master on an empty volume would make the replicas drop their data. The
# one exception is the first start of all pods at once: Sentinels that
# started first name FIRST_MASTER without ever having seen a replica of it.
# It asks again every 2 s for up to INIT_WAIT_SECONDS (120) before failing.
#
# Environment: POD_NAME, POD_NAMESPACE, CLUSTER_DOMAIN, FIRST_MASTER,
# SENTINEL_SERVICES (space-separated Service names), MASTER_NAME, REDIS_PORT,
# SENTINEL_PORT, REDIS_MONITOR_PASSWORD, and what ROLE's template needs
# (render.sh fails, writing nothing, on any unset placeholder).
set -eu

die() {
    echo "kubernetes-init.sh: $*" >&2
    exit 1
}

[ "$#" -eq 1 ] || die "usage: kubernetes-init.sh data|sentinel"
role=$1

# The VIP of a Service of this namespace. Fully qualified: a StatefulSet
# pod's own name is in its /etc/hosts with the pod's IP.
vip() {
    getent ahostsv4 "$1.${POD_NAMESPACE:?}.svc.${CLUSTER_DOMAIN:?}" | awk '{ print $1; exit }'
}

# `redis-cli` as the read-only monitor user, never hanging on a dead address.
ask() {
    host=$1
    port=$2
    shift 2
    REDISCLI_AUTH=${REDIS_MONITOR_PASSWORD:?} timeout 3 redis-cli --no-auth-warning \
        --user monitor -h "$host" -p "$port" "$@"
}

# Prints "ip port" of the confirmed master, nothing when no Sentinel answered;
# fails when Sentinels answered without naming a confirmed master.
current_master() {
    answered=no
    for service in ${SENTINEL_SERVICES:?}; do
        address=$(vip "$service") || continue
        [ -n "$address" ] || continue
        view=$(ask "$address" "${SENTINEL_PORT:?}" sentinel master "${MASTER_NAME:?}" 2>/dev/null) || continue
        # Field names and values alternate, one per line.
        field() { printf '%s\n' "$view" | awk -v name="$1" 'previous == name { print; exit } { previous = $0 }'; }
        master="$(field ip) $(field port)"
        [ "$master" != " " ] || continue
        answered=yes
        # shellcheck disable=SC2086 # "ip port" into two arguments
        if ask $master info replication 2>/dev/null | grep -q '^role:master'; then
            echo "$master"
            return 0
        fi
        # This very pod, not running yet: at the first start, when the
        # Sentinels (started alongside) monitor FIRST_MASTER but have never
        # seen a replica of it, nobody holds data and it may start as the
        # master. Once they have, its empty volume must not become the
        # master: wait for the failover its absence brings.
        if [ "${master% *}" = "$self" ] && [ "$(field num-slaves)" = 0 ]; then
            echo "kubernetes-init.sh: $service names this pod and has never seen a replica: first start" >&2
            echo "$master"
            return 0
        fi
        echo "kubernetes-init.sh: $service names $master, which does not say it is the master" >&2
    done
    [ "$answered" = no ] || return 1
}

self=$(vip "${POD_NAME:?}")
[ -n "$self" ] || die "the Service $POD_NAME does not resolve: it must exist before its pod"

case $role in
    data) config=${REDIS_DATA_DIR:?}/redis.conf ;;
    sentinel) config=${SENTINEL_DATA_DIR:?}/sentinel.conf ;;
    *) die "unknown role '$role'" ;;
esac

if [ -s "$config" ]; then
    echo "kubernetes-init.sh: keeping $config (rewritten by Redis/Sentinel at run time)"
    exit 0
fi

# Asked again every 2 s for up to INIT_WAIT_SECONDS before giving up: a
# failed init container is retried by kubelet with a growing back-off (10 s,
# 20 s, 40 s...), which would keep a pod out for minutes after a failover
# that takes seconds.
waited=0
until master=$(current_master); do
    [ "$waited" -lt "${INIT_WAIT_SECONDS:-120}" ] ||
        die "the Sentinels name no master that confirms it after ${waited} s"
    [ "$waited" -gt 0 ] || echo "kubernetes-init.sh: the Sentinels name no master that confirms it yet; asking every 2 s"
    sleep 2
    waited=$((waited + 2))
done
if [ -z "$master" ]; then
    master="$(vip "${FIRST_MASTER:?}") ${REDIS_PORT:?}"
    echo "kubernetes-init.sh: no Sentinel answers (first start): $FIRST_MASTER ($master) is the master"
fi
MASTER_IP=${master% *}
MASTER_PORT=${master#* }
export MASTER_IP MASTER_PORT

case $role in
    data)
        export REDIS_ANNOUNCE_IP="$self"
        if [ "$MASTER_IP" = "$self" ]; then
            template=/evergreen/master.conf.template
        else
            template=/evergreen/replica.conf.template
        fi
        ;;
    sentinel)
        export SENTINEL_ANNOUNCE_IP="$self"
        template=/evergreen/sentinel.conf.template
        ;;
esac

sh /evergreen/render.sh "$template" "$config"
echo "kubernetes-init.sh: rendered $config from $template (announcing $self, master $MASTER_IP:$MASTER_PORT)"
