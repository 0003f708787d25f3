# syntax=docker/dockerfile:1
# The archiver image: verifies every part of a job and completes it. Its
# HTTP port serves only /healthz and /readyz.
# Build from the repository root (the context must hold proto/, shared/ and
# services/archiver/, because services/archiver/go.mod replaces ../../proto and
# ../../shared with those folders):
#
#   docker build -f deploy/docker/archiver.Dockerfile -t dataport/archiver:dev .

FROM golang:1.26 AS build
# VERSION names the build in logs and traces (make images passes git describe).
ARG VERSION=dev
WORKDIR /src
COPY proto/ proto/
COPY shared/ shared/
COPY services/archiver/ services/archiver/
# The healthcheck imports only the standard library, so it builds from the
# deploy module's go.mod without downloading the module's test dependencies.
COPY deploy/go.mod deploy/go.sum deploy/
COPY deploy/healthcheck/ deploy/healthcheck/
# GOWORK=off: the module builds on its own from its go.mod and replace lines,
# as `make check-modules` verifies; CGO_ENABLED=0 makes a static binary that
# runs on distroless/static.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    cd services/archiver && \
    CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/dataport-archiver . && \
    cd /src/deploy && \
    CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags="-s -w" -o /out/healthcheck ./healthcheck

# distroless/static: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dataport-archiver /dataport-archiver
COPY --from=build /out/healthcheck /healthcheck
# The binary's default listen address is loopback, which nothing outside the
# container reaches; compose and Kubernetes set it explicitly as well.
ENV DATAPORT_HEALTH_ADDR=0.0.0.0:8082
EXPOSE 8082
# 65532 is distroless's nonroot user, numeric so that Kubernetes'
# runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/healthcheck", "http://127.0.0.1:8082/readyz"]
ENTRYPOINT ["/dataport-archiver"]
