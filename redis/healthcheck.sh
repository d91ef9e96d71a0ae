#!/bin/sh
# healthcheck.sh data|sentinel
#
# The compose healthcheck of every Redis service, signed in as the read-only
# `monitor` user. The password comes from the container's environment
# (REDISCLI_AUTH keeps it off the command line).
#
#   data      the node answers PING with its password: it is up and has
#             loaded its data set (Redis answers LOADING until then). Not
#             "in sync": after a failover the first service may be a replica
#             of a later one, and `depends_on` would then wait forever.
#   sentinel  the Sentinel knows the master and enough Sentinels to reach
#             quorum and authorise a failover (SENTINEL CKQUORUM)
set -eu

case ${1:-} in
    data)
        REDISCLI_AUTH=$REDIS_MONITOR_PASSWORD redis-cli --no-auth-warning \
            --user monitor -p "$REDIS_PORT" ping | grep -q '^PONG'
        ;;
    sentinel)
        REDISCLI_AUTH=$REDIS_MONITOR_PASSWORD redis-cli --no-auth-warning \
            --user monitor -p "$SENTINEL_PORT" sentinel ckquorum "$MASTER_NAME" | grep -q '^OK'
        ;;
    *)
        echo "usage: healthcheck.sh data|sentinel" >&2
        exit 2
        ;;
esac
