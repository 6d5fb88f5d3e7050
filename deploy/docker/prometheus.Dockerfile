# Prometheus from Debian 12's package, for deploy/compose.yaml: builds from the
# same Debian base as Gantry's images, so the stack needs no image registry.
#   DOCKER_BUILDKIT=1 docker build -f deploy/docker/prometheus.Dockerfile -t gantry-prometheus:bookworm deploy
# Sites with a registry may use the official prom/prometheus image instead:
# the command line below is the same.
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
# curl: the compose health check (/-/ready).
RUN apt-get update \
 && apt-get install -y --no-install-recommends prometheus curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus \
 && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus", \
     "--web.console.libraries=/usr/share/prometheus/console_libraries", \
     "--web.console.templates=/usr/share/prometheus/consoles"]
