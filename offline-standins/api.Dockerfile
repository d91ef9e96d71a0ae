# evergreen/api for the offline check: the runtime definition of
# api/Dockerfile (built with --target runtime-base and tagged
# evergreen-offline/api-runtime-base) plus the binary compiled on the host.
FROM evergreen-offline/api-runtime-base
COPY api /usr/local/bin/api
