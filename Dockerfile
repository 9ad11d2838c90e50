# syntax=docker/dockerfile:1
# The acs-identity-operator image: one binary that runs the operator (`run`, the default) or
# prints the CRDs (`crd`). Only the operator: the ACS Identity emulator is a separate crate with an
# image of its own (crates/emulator/Dockerfile), for tests and demos, never in this image.
#
#   docker build -t acs-identity-operator:0.1.0 .
#   docker run --rm acs-identity-operator:0.1.0 crd
#
# Stages: `chef` installs cargo-chef; `planner` reduces the workspace to a dependency recipe;
# `builder` compiles only the dependencies first (a layer that stays cached until Cargo.toml or
# Cargo.lock change), then the operator itself; the runtime stage is distroless, non-root.

# Debian 12 (bookworm) on both sides: the binary links against the builder's glibc, and
# distroless cc-debian12 ships the same one.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS chef
WORKDIR /src
RUN cargo install cargo-chef --locked --version 0.1.78

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin acs-identity-operator

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin acs-identity-operator
COPY . .
RUN cargo build --release --locked --bin acs-identity-operator \
    && install -D -m 0755 target/release/acs-identity-operator /out/acs-identity-operator

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="acs-identity-operator" \
      org.opencontainers.image.description="Kubernetes operator for Azure Communication Services identities and tokens" \
      org.opencontainers.image.licenses="MIT"
COPY --from=builder /out/acs-identity-operator /usr/local/bin/acs-identity-operator
# 65532 is distroless' `nonroot` user; numeric, so runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/acs-identity-operator"]
CMD ["run"]
