#!/bin/sh
# Builds target/debian/genesys-closer_<version>-1_<arch>.deb with its man pages and
# shell completions. Extra arguments go to cargo-deb.
#
# cargo-deb packages files that must already exist: the release binary writes its man
# pages and completions into target/assets/ first (the paths Cargo.toml's
# [package.metadata.deb] assets list), then cargo-deb packages without building again.
set -eu
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
    echo "pkg/build-deb.sh: cargo-deb is not installed (cargo install cargo-deb --locked)" >&2
    exit 1
fi

cargo build --release --locked
rm -rf target/assets
"${CARGO_TARGET_DIR:-target}/release/genesys-closer" generate all --dir target/assets >/dev/null
# Debian installs man pages compressed; -n leaves the name and time out, so a rebuild
# gives the same bytes.
gzip -9n target/assets/man/*.1
cargo deb --no-build "$@"
