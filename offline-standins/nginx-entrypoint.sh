#!/bin/sh
# What the official nginx image's 20-envsubst-on-templates.sh does: render
# /etc/nginx/templates/NAME.template into /etc/nginx/conf.d/NAME, replacing
# only variables that are set in the environment (so nginx's own $variables
# survive), then run the command.
set -eu
defined=$(env | cut -d= -f1 | sed 's/^/${/; s/$/}/' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
    [ -f "$template" ] || continue
    output=/etc/nginx/conf.d/$(basename "$template" .template)
    envsubst "$defined" <"$template" >"$output"
    echo "nginx-entrypoint.sh: rendered $output"
done
exec "$@"
