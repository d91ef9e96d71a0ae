# Shared by the scripts in this folder (sourced, not run): how they print a
# step, become root, install Debian packages, and find /usr/sbin tools.

step() { printf '\n==> %s  [at %d s]\n' "$*" "$SECONDS"; }

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

# fill_secrets EXAMPLE OUTPUT: writes OUTPUT (mode 0600) from EXAMPLE with
# every empty *_PASSWORD= line given 48 random characters and every empty
# *_SECRET= line (the JWT key) 96. Used for .env (scripts/up) and the
# Kubernetes overlays' secrets.env (scripts/kube-secrets).
fill_secrets() {
    local example=$1 output=$2 line
    random() { head -c 144 /dev/urandom | base64 | tr -d '/+=\n' | cut -c "1-$1"; }
    (
        umask 077
        while IFS= read -r line || [ -n "$line" ]; do
            case $line in
                [A-Z]*_PASSWORD=) printf '%s%s\n' "$line" "$(random 48)" ;;
                [A-Z]*_SECRET=) printf '%s%s\n' "$line" "$(random 96)" ;;
                *) printf '%s\n' "$line" ;;
            esac
        done <"$example" >"$output"
    )
}

# nginx, dnsmasq, iptables and ip live in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/sbin:/sbin"

# What the scripts build or fetch once per machine (nginx and promtool trees,
# cargo-deny, Python venvs), kept apart from any checkout, like the Debian
# packages they install: a fresh clone reuses them. Each is rebuilt when its
# pinned version changes or it is missing.
TOOLS=${EVERGREEN_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/evergreen-tools}
mkdir -p "$TOOLS"

# The shipped nginx config (nginx/templates/default.conf.template) keeps
# connections to the API alive with `server api:8000 resolve` in an upstream
# block, which nginx has had since 1.27.3 (the pinned official image is 1.28).
# Debian 12 has 1.22 and 13 has 1.26, and Debian's 1.30 (forky) needs a newer
# libc, libssl and libpcre2 than bookworm's. So the tests run Debian forky's
# nginx from a debootstrap tree of its own: built once into NGINX_TREE (about
# 40 s and 220 MB), run with the tree's own loader and libraries (no chroot:
# paths stay the host's), and imported as the base of the nginx stand-in image
# by scripts/docker-check.
NGINX_TREE=$TOOLS/nginx-forky

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
        awk -v tree="$NGINX_TREE/" 'index($2, tree) == 1 { print $2 }' /proc/mounts |
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

# forky_package PACKAGE: unpacks Debian forky's PACKAGE (fetched with the
# forky tree's apt, see modern_nginx) into $TOOLS/PACKAGE-forky, once,
# and prints that directory. For Go programs that need only libc, which then
# run on bookworm as they are.
forky_package() {
    local package=$1 dir=$TOOLS/$1-forky root=$NGINX_TREE/rootfs
    if [ ! -d "$dir/usr" ]; then
        modern_nginx >/dev/null 2>&1
        step "$package from Debian forky into $dir (once)" >&2
        as_root chroot "$root" sh -c "cd /tmp && rm -f ${package}_*.deb && apt-get download $package >/dev/null"
        rm -rf "$dir"
        mkdir -p "$dir"
        dpkg-deb -x "$root"/tmp/"${package}"_*.deb "$dir"
        as_root rm -f "$root"/tmp/"${package}"_*.deb
    fi
    (cd "$dir" && pwd)
}

# kubernetes_tools: what tests/tests/kubernetes.rs runs, exported as
#   EVERGREEN_KUBECTL               kubectl with its Kustomize: the machine's,
#                                   else Debian forky's (bookworm's 1.20 is too old)
#   EVERGREEN_KUBERNETES_VALIDATE   kubernetes-validate (PyPI, pinned) in a venv
#   EVERGREEN_KUBERNETES_PROMTOOL   Debian forky's promtool 3.5: bookworm's
#                                   2.42 is built without Kubernetes service
#                                   discovery and refuses prometheus/kubernetes.yml
KUBERNETES_VALIDATE_VERSION=1.37.0
kubernetes_tools() {
    if command -v kubectl >/dev/null; then
        EVERGREEN_KUBECTL=$(command -v kubectl)
    else
        EVERGREEN_KUBECTL=$(forky_package kubectl)/usr/bin/kubectl
    fi
    EVERGREEN_KUBERNETES_PROMTOOL=$(forky_package promtool)/usr/bin/promtool
    local venv=$TOOLS/kubernetes-validate-venv
    if [ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ]; then
        step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION into $venv (PyPI)"
        python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
    fi
    EVERGREEN_KUBERNETES_VALIDATE=$(cd "$venv" && pwd)/bin/kubernetes-validate
    export EVERGREEN_KUBECTL EVERGREEN_KUBERNETES_PROMTOOL EVERGREEN_KUBERNETES_VALIDATE
    "$EVERGREEN_KUBECTL" version --client | head -n 2
    "$EVERGREEN_KUBERNETES_PROMTOOL" --version | head -n 1
}

# openapi_validator: exports EVERGREEN_OPENAPI_VALIDATOR, openapi-spec-validator
# (PyPI, pinned) in a venv: an independent reading of the served OpenAPI
# document, as code generators and importers would read it.
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
openapi_validator() {
    local venv=$TOOLS/openapi-validator-venv
    if [ "$("$venv/bin/pip" show openapi-spec-validator 2>/dev/null | sed -n 's/^Version: //p')" != "$OPENAPI_SPEC_VALIDATOR_VERSION" ]; then
        step "openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION into $venv (PyPI)"
        python3 -c 'import ensurepip' >/dev/null 2>&1 || apt_install python3-venv
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
    fi
    EVERGREEN_OPENAPI_VALIDATOR=$(cd "$venv" && pwd)/bin/openapi-spec-validator
    export EVERGREEN_OPENAPI_VALIDATOR
}
