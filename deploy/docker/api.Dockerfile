# syntax=docker/dockerfile:1
# Image of the api service, with todoctl, the write side's operator tools, beside it
# (the todoctl-* CronJobs run it as their command).
# Build from the repository root, since the go.work workspace needs every module:
#   docker build -f deploy/docker/api.Dockerfile -t outboxtodo/api .

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION} AS build
WORKDIR /src
COPY . .
# Static (the final image has no libc), without local paths or VCS stamps, so that the
# same source builds the same binary. The cache mounts keep modules and build results
# between builds.
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/api ./services/api/cmd/api
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/todoctl ./services/api/cmd/todoctl

# distroless/static: CA certificates and tzdata, no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/api /api
COPY --from=build /out/todoctl /todoctl
USER 65532:65532
ENTRYPOINT ["/api"]
