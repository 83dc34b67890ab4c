# syntax=docker/dockerfile:1
# The understudy controller image: a release build on rust:1 (etcd-client needs protoc and the protobuf
# well-known types at build time), shipped on distroless cc (glibc + libgcc only) as user 65532.
#
#   docker build -t ghcr.io/understudy-dev/understudy:0.1.0 .

FROM rust:1 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole workspace manifest set is needed to resolve it (e2e and cli are members), but only the controller is built.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
COPY controller ./controller
COPY e2e ./e2e
COPY cli ./cli
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p understudy --bin understudy \
 && cp target/release/understudy /understudy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /understudy /understudy
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/understudy"]
CMD ["run"]
