# berth's operator image: the static `berth` binary alone, no base image, no shell.
#
# Built by scripts/build-operator-image.sh, which first builds the binary with
#   RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR=target/static \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu -p berth --bin berth
# strips a copy of it into target/static/operator-image/berth, and then runs
# `DOCKER_BUILDKIT=0 docker build` with the repository as context (.dockerignore keeps only
# that binary in it). Nothing is pulled: it builds offline.
#
# The operator talks to the Kubernetes API with the service account's CA (mounted by
# Kubernetes) and to Docker engines with the CA of each DockerHost's TLS Secret, so the image
# needs no CA bundle. Temporary files go to $TMPDIR (manifests/deployment.yaml mounts an
# emptyDir at /tmp, the root filesystem being read-only).
FROM scratch

LABEL org.opencontainers.image.title="berth-operator" \
      org.opencontainers.image.description="berth: converges Docker hosts to declared ContainerSets" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY target/static/operator-image/berth /berth

# Non-root (the "nonroot" uid/gid of distroless images); numeric, as there is no /etc/passwd.
USER 65532:65532
ENV TMPDIR=/tmp
EXPOSE 8080
ENTRYPOINT ["/berth"]
CMD ["operator"]
