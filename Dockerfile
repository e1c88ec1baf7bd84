# Builds every closeio-sync binary into one small image:
# closeio-ingest, closeio-worker, closeio-scheduler, closeio-ctl, closeio-sandbox.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/closeio-ingest target/release/closeio-worker target/release/closeio-scheduler \
       target/release/closeio-ctl target/release/closeio-sandbox /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 closeio
COPY --from=build /out/ /usr/local/bin/
COPY scripts/compose-demo.sh /usr/local/bin/closeio-compose-demo
USER closeio
ENV LOG_FORMAT=json RUST_LOG=info
