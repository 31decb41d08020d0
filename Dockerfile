# syntax=docker/dockerfile:1
#
# One image for all six services (and `identity-keys`, and the payment
# provider emulator `payment-provider` for development): compose.yaml and
# deploy/k8s choose the binary to run. See deploy/README.md.
#   docker build -t shop:dev .                    # the services (last stage)
#   docker build --target keys -t shop-keys:dev . # compose's one-shot key maker

# The workspace's rust-version (Cargo.toml); xtask/tests/deploy.rs keeps the
# two equal.
ARG RUST_VERSION=1.94

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# No protoc: proto/build.rs compiles the contract with protox (pure Rust).
# ring and mimalloc need a C compiler, which this image has. The registry
# and target directories are cache mounts, so a source change rebuilds only
# the crates it touches; the binaries are copied out of the cache in the
# same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
        -p svc-gateway -p svc-order -p svc-inventory -p svc-payment -p svc-cart -p svc-notify -p shop-provider \
    && mkdir -p /out/bin /out/var/lib/shop/notify /out/var/lib/shop/payment-provider \
    && for bin in svc-gateway svc-order svc-inventory svc-payment svc-cart svc-notify identity-keys payment-provider; do \
        cp "target/release/$bin" /out/bin/; \
    done

# The storefront the gateway serves (STOREFRONT_DIR). Node stays here: the
# runtime image has only its built files.
FROM node:22-bookworm-slim AS storefront
WORKDIR /web
# Playwright is a dev dependency for the browser tests; no browser is needed
# to bundle.
ENV PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
COPY web/package.json web/package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

# Compose's one-shot `identity-keys` service: the same binary with a shell,
# so that a second `docker compose up` finds the pair and keeps it
# (identity-keys refuses to overwrite one). Not used by the services.
FROM debian:bookworm-slim AS keys
COPY --from=builder /out/bin/identity-keys /usr/local/bin/identity-keys
# Owned by the runtime user: an empty named volume mounted here starts with
# this owner and mode.
RUN mkdir /signing /verifying \
    && chown 65532:65532 /signing /verifying \
    && chmod 0700 /signing
USER 65532:65532

# The services: Debian's slim base (glibc, libgcc) and the builder's CA
# certificates; the binaries need nothing else. No ENTRYPOINT or CMD: the
# deployment names the binary.
FROM debian:bookworm-slim AS runtime
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/bin/ /usr/local/bin/
COPY --from=storefront /web/dist/ /usr/share/shop/storefront/
# svc-notify's NOTIFY_DATA_DIR and the emulator's PROVIDER_DATA_DIR, owned
# by the runtime user so a named volume mounted there is writable.
COPY --from=builder --chown=65532:65532 /out/var/lib/shop/ /var/lib/shop/
# Numeric, so Kubernetes can check runAsNonRoot against the image.
USER 65532:65532
EXPOSE 8080 9080 50051 50052 50053 50054 50055 9051 9052 9053 9054 9055 12111
