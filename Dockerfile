# Builds the ledger without a database: queries are checked against the committed .sqlx/ data.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release --bin mpe-ledger

FROM debian:bookworm-slim
# ca-certificates: the system roots that https:// nodes and upstreams are verified against. No TLS
# certificate or key is ever copied into the image: mount them at run time and set
# MPE_LEDGER_TLS_CERT_FILE / MPE_LEDGER_TLS_KEY_FILE (see docker-compose.yml).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/mpe-ledger /usr/local/bin/mpe-ledger
EXPOSE 7000
ENTRYPOINT ["mpe-ledger"]
CMD ["serve", "--listen", "0.0.0.0:7000"]
