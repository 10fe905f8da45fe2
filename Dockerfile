# ai-cache in a container: one binary, the roles chosen by its command (`run --roles ...`).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# .dockerignore keeps target/, .data/ (keys!), .git/ and node_modules out of the context.
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# WITH_CHROMIUM=true adds Debian's chromium, for the renderer-js role (JavaScript rendering).
ARG WITH_CHROMIUM=false
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
    $(if [ "$WITH_CHROMIUM" = true ]; then echo chromium; fi) \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin aicache
COPY --from=build /src/target/release/ai-cache /usr/local/bin/ai-cache
USER aicache
ENV BIND_ADDR=0.0.0.0:8080 LOG_FORMAT=json
EXPOSE 8080
ENTRYPOINT ["ai-cache"]
CMD ["run"]
