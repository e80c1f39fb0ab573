# One image holds the three services; the command chooses which one runs:
#   docker build -t clickstream-pipeline .
#   docker run --rm -e REDIS_URL=redis://redis:6379/0 -p 8080:8080 clickstream-pipeline ingest
#   … clickstream-pipeline processor    … clickstream-pipeline queryapi
ARG GO_VERSION=1.26

FROM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, so that a code change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
# Only what the services are built from: no bin/, no .data/, no test harnesses.
COPY events ./events
COPY internal ./internal
COPY ingest ./ingest
COPY processor ./processor
COPY queryapi ./queryapi
# Static binaries (no cgo), so they run on musl-based alpine.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/ ./ingest ./processor ./queryapi

# alpine rather than distroless: its busybox wget is what the compose healthchecks run.
FROM alpine:3.22
RUN adduser -D -H -u 10001 app
COPY --from=build /out/ /usr/local/bin/
USER app
# ingest, queryapi, processor (health endpoints only)
EXPOSE 8080 8081 8082
CMD ["ingest"]
