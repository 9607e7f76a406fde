# A small static image running as non-root:
#   docker build -t apikey-operator:0.1.0 .
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release --target x86_64-unknown-linux-musl \
 && cp target/x86_64-unknown-linux-musl/release/apikey-operator /apikey-operator

FROM scratch
COPY --from=build /apikey-operator /apikey-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/apikey-operator"]
CMD ["run"]
