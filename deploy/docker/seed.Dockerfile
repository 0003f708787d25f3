# syntax=docker/dockerfile:1
# The seeder image: dataport-seed writes the deterministic demo data set
# (rooms, users, messages, assets, records) to NATS and MinIO, idempotently,
# and the demo users' credentials to DATAPORT_DEV_DIR. It runs once and exits.
# Build from the repository root (shared/go.mod replaces ../proto):
#
#   docker build -f deploy/docker/seed.Dockerfile -t dataport/seed:dev .

FROM golang:1.26 AS build
# VERSION names the build in logs and traces (make images passes git describe).
ARG VERSION=dev
WORKDIR /src
COPY proto/ proto/
COPY shared/ shared/
# GOWORK=off: the module builds on its own from its go.mod and replace lines;
# CGO_ENABLED=0 makes a static binary that runs on distroless/static.
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    cd shared && \
    CGO_ENABLED=0 GOWORK=off go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/dataport-seed ./cmd/dataport-seed && \
    mkdir -p /out/dev

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/dataport-seed /dataport-seed
# An empty directory owned by nonroot: a named volume mounted here starts
# with this ownership, so the seeder can write credentials.json into it.
COPY --from=build --chown=65532:65532 /out/dev /home/nonroot/dev
ENV DATAPORT_DEV_DIR=/home/nonroot/dev
# 65532 is distroless's nonroot user, numeric so that Kubernetes'
# runAsNonRoot can verify it without a passwd lookup.
USER 65532:65532
ENTRYPOINT ["/dataport-seed"]
