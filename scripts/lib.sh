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
