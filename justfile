# kafkit tasks. Install just with `cargo install just`; every recipe is a plain command you can also run by hand.

# Unit and integration tests (integration tests start a real local Kafka; needs a JDK 17+ and Maven).
test:
    cargo test --workspace

# Only the tests against the real broker.
itest:
    cargo test -p kafkit-integration-tests

# The demo against an embedded local Kafka (or KAFKA_BOOTSTRAP=host:port).
demo:
    cargo run -p kafkit --example demo

# The delivery fault suite with its figures (docs/reliability.md).
faults:
    cargo test -p kafkit-integration-tests --test faults -- --nocapture 2>&1 | grep -E "SCENARIO|churn seed|test result"

# Longer, randomised churn runs: `just chaos 5 4` runs 5 random seeds with 4 churn rounds each; every
# seed is printed, and KAFKIT_CHAOS_SEED=<seed> replays one.
chaos runs="5" rounds="4":
    for i in $(seq {{runs}}); do KAFKIT_CHAOS_SEED=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ') KAFKIT_CHAOS_ROUNDS={{rounds}} cargo test -p kafkit-integration-tests --test faults -- churn --nocapture || exit 1; done

# A static x86_64-unknown-linux-musl demo binary built with no C compiler.
musl:
    bash .ci/musl

# Side-by-side benchmarks: kafkit vs rust-rdkafka vs the Java client vs a raw fetch ceiling, and the
# kafkit command vs kcat, on one local broker (docs/benchmarks.md). Takes about 30 minutes at the
# default size; `just bench --scale 0.2` is a fifth of the records.
bench *args: bench-deps
    cargo run --release --locked --manifest-path bench/Cargo.toml -- {{args}}

# What the benchmarks need besides Rust and a JDK (Debian packages): librdkafka-dev for the
# rust-rdkafka peers, kcat for the command-line peers.
bench-deps:
    @pkg-config --exists rdkafka || { echo "librdkafka missing: apt-get install -y librdkafka-dev"; exit 1; }
    @command -v kcat >/dev/null || { echo "kcat missing: apt-get install -y kcat"; exit 1; }

# The same runner at a tiny size, one round: keeps it from rotting (about a minute).
bench-smoke: bench-deps
    cargo run --release --locked --manifest-path bench/Cargo.toml -- --scale 0.002 --rounds 1 --out /tmp/kafkit-bench-smoke.md

# The metrics hot-path micro-benchmark.
bench-metrics:
    cargo bench -p kafkit-metrics

# Start a local Kafka, print its address, keep it up until Ctrl-C.
broker:
    cargo run -q -p kafkit-testkit --example broker

# Formatting and lints as CI runs them.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
