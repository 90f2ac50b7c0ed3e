# converge's container image, for those with Docker, Podman or Buildah: the
# same layout scripts/image builds (it assembles the root filesystem here
# too, with --rootfs). What the tests build, push, pull and run is
# scripts/image's (no Docker daemon runs where they run); this file is not
# built by them.
#
#   docker build -t converge:0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
 && scripts/image --binary target/release/converge --rootfs /rootfs

FROM scratch
# The commit the image is built from (the build context has no .git).
ARG REVISION=unknown
COPY --from=build /rootfs/ /
COPY --from=build --chown=65532:65532 /rootfs/var/lib/converge/ /var/lib/converge/
USER 65532:65532
WORKDIR /var/lib/converge
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PATH=/usr/local/bin
LABEL org.opencontainers.image.title=converge \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.source=https://github.com/converge-dev/converge
ENTRYPOINT ["/usr/local/bin/converge"]
