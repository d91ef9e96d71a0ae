#!/bin/sh
# render.sh TEMPLATE OUTPUT
#
# Replace every ${VAR} in TEMPLATE with the value of the environment variable
# VAR and write OUTPUT. Fails, writing nothing, when a referenced variable is
# unset or empty (an empty password or port would still start Redis, wrongly),
# when a value contains a newline (it could inject config directives) or `${`, or when
# the template holds a `${` that is not a well-formed placeholder.
#
# The test harness (tests/src/redis_ha.rs) renders its configs with this script too.
#
# Run it only when OUTPUT does not exist yet: Redis and Sentinel rewrite their
# rendered files at run time (current master, epochs, known peers) and that
# state must survive restarts.
set -eu

die() {
    echo "render.sh: $*" >&2
    exit 1
}

[ "$#" -eq 2 ] || die "usage: render.sh TEMPLATE OUTPUT"
template=$1
output=$2
[ -r "$template" ] || die "cannot read template $template"

# Strip the well-formed placeholders; any `${` left is a typo that would
# otherwise reach Redis verbatim.
bad=$(sed 's/\${[A-Za-z_][A-Za-z0-9_]*}//g' "$template" | grep -n '\${' | head -n 1 | cut -d: -f1 || true)
[ -z "$bad" ] || die "$template:$bad: malformed placeholder: $(sed -n "${bad}p" "$template")"

vars=$(grep -o '\${[A-Za-z_][A-Za-z0-9_]*}' "$template" | sed 's/^\${\(.*\)}$/\1/' | sort -u)

missing=""
for var in $vars; do
    eval "value=\${$var-}"
    # shellcheck disable=SC2154 # assigned by eval
    if [ -z "$value" ]; then
        missing="$missing $var"
    fi
    case $value in
        *'
'*) die "$var contains a newline" ;;
        # Substituted one placeholder at a time: a value holding one would
        # be expanded by a later pass.
        *'${'*) die "$var contains \${" ;;
    esac
done
[ -z "$missing" ] || die "$template: unset or empty variable(s):$missing"

# Write next to OUTPUT and rename, so a failure never leaves a half file that a
# later start would take as already rendered. umask 077: the file holds secrets
# (Redis recreates it 0644 on its first CONFIG REWRITE, so keep its directory
# private too).
umask 077
tmp="$output.tmp.$$"
trap 'rm -f "$tmp" "$tmp.sed"' EXIT

# sed, placeholder by placeholder: only `${VAR}` is replaced (envsubst would
# replace a bare `$VAR` too).
cp "$template" "$tmp"
for var in $vars; do
    eval "value=\${$var}"
    # Escape what sed treats specially in a replacement: \ & and the | delimiter.
    escaped=$(printf '%s\n' "$value" | sed 's/[\\&|]/\\&/g')
    sed "s|\${$var}|$escaped|g" "$tmp" >"$tmp.sed"
    mv "$tmp.sed" "$tmp"
done

mv "$tmp" "$output"
trap - EXIT
