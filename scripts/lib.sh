# Shared by the scripts in this folder (sourced, not run): how they print a
# step, become root, install Debian packages, and find /usr/sbin tools.

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: installs the named Debian packages, quietly and
# without recommends (prometheus would pull in node-exporter, a daemon
# nothing here uses). Does nothing without arguments.
apt_install() {
    [ "$#" -gt 0 ] || return 0
    step "installing $* (Debian packages)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "$@" >/dev/null
}

# nginx, dnsmasq, iptables and ip live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# The shipped nginx config (nginx/templates/default.conf.template) keeps
# connections to the API alive with `server api:8000 resolve` in an upstream
# block, which nginx has had since 1.27.3 (the pinned official image is 1.28).
# Debian 12 has 1.22 and 13 has 1.26, and Debian's 1.30 (forky) needs a newer
# libc, libssl and libpcre2 than bookworm's. So the tests run Debian forky's
# nginx from a debootstrap tree of its own: built once into NGINX_TREE (about
# 40 s and 220 MB), run with the tree's own loader and libraries (no chroot:
# paths stay the host's), and imported as the base of the nginx stand-in image
# by scripts/docker-check.
NGINX_TREE=target/tools/nginx-forky

# modern_nginx: makes sure $NGINX_TREE holds nginx >= 1.27.3 and its wrapper
# $NGINX_TREE/nginx, and exports EVERGREEN_NGINX (what the test harness runs).
modern_nginx() {
    local root=$NGINX_TREE/rootfs
    if [ ! -x "$NGINX_TREE/nginx" ]; then
        step "nginx 1.30 from Debian forky into $NGINX_TREE (debootstrap, once)"
        command -v debootstrap >/dev/null || apt_install debootstrap
        # A debootstrap that was interrupted leaves the tree's /proc mounted,
        # which rm cannot remove.
        local mount
        awk -v tree="$(pwd)/$NGINX_TREE/" 'index($2, tree) == 1 { print $2 }' /proc/mounts |
            sort -r | while read -r mount; do as_root umount "$mount"; done
        as_root rm -rf "$NGINX_TREE"
        mkdir -p "$NGINX_TREE"
        # bookworm's debootstrap has no script for forky; sid's works for it.
        # curl and envsubst are for the stand-in image (healthcheck, templates).
        as_root debootstrap --variant=minbase --include=nginx,curl,gettext-base \
            forky "$root" http://deb.debian.org/debian /usr/share/debootstrap/scripts/sid >/dev/null
        cat >"$NGINX_TREE/nginx" <<'WRAPPER'
#!/bin/sh
# Debian forky's nginx from the tree beside this file, with the tree's own
# loader and libraries (written by scripts/lib.sh, modern_nginx).
tree=$(cd "$(dirname "$0")" && pwd)/rootfs
exec "$tree/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" \
    --library-path "$tree/usr/lib/x86_64-linux-gnu" "$tree/usr/sbin/nginx" "$@"
WRAPPER
        chmod +x "$NGINX_TREE/nginx"
    fi
    EVERGREEN_NGINX=$(cd "$NGINX_TREE" && pwd)/nginx
    export EVERGREEN_NGINX
    "$EVERGREEN_NGINX" -v
}
