# A small static image running as non-root:
#   docker build -t apikey-operator:0.1.0 .
# tests/image/build builds the same final stage without pulling (the binary built on the host the
# same way), and tests/image.rs checks it.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# glibc linked statically: nothing to load at run time, as FROM scratch needs
RUN RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release \
      --target x86_64-unknown-linux-gnu --bin apikey-operator \
 && cp target/x86_64-unknown-linux-gnu/release/apikey-operator /apikey-operator \
 && strip /apikey-operator

FROM scratch
COPY --from=build /apikey-operator /apikey-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/apikey-operator"]
CMD ["run"]
