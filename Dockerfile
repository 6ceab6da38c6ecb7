# syntax=docker/dockerfile:1
#
# otawatch: one static binary on a small base, run as a non-root user.
#
#   docker build -t otawatch .
#   docker run --rm otawatch help
#
# docker-compose.yml and deploy/k8s/ run it once per service ("run bridge",
# "run projector", ...); deploy/deploy_test.go checks them against this file.

FROM golang:1.26-alpine AS build
WORKDIR /src
# Modules first: a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo), without build paths, and with the time zone database built
# in (notify's digest time_zone names an IANA zone; the base has no tzdata).
RUN CGO_ENABLED=0 go build -trimpath -tags timetzdata -ldflags="-s -w" -o /out/otawatch .

# Alpine rather than distroless: its busybox wget is what the compose health
# checks run inside the container (wget -q -O /dev/null .../readyz), and it
# carries the CA certificates notify's HTTPS receivers need.
FROM alpine:3.22
RUN addgroup -S -g 65532 otawatch \
	&& adduser -S -D -H -u 65532 -G otawatch -h /var/lib/otawatch otawatch \
	&& mkdir -p /var/lib/otawatch /var/lib/otawatch-mosquitto \
	&& chown 65532:65532 /var/lib/otawatch /var/lib/otawatch-mosquitto
COPY --from=build /out/otawatch /usr/local/bin/otawatch
# data_dir: the device registry ("otawatch devices"), and the embedded
# server's store when no nats.url is set. A volume mounted on an empty
# directory of the image starts with its owner, so otawatch can write it.
ENV OTAWATCH_DATA_DIR=/var/lib/otawatch
WORKDIR /var/lib/otawatch
USER 65532:65532
# 8080 http.listen (api), 9100 ops.listen (/healthz, /readyz, /metrics of
# every process), 4222 and 1883 the embedded NATS server's client port and
# MQTT listener when one container runs everything.
EXPOSE 8080 9100 4222 1883
ENTRYPOINT ["/usr/local/bin/otawatch"]
CMD ["help"]
