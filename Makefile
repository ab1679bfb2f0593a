# clipo: `make test` runs every test; `make build` builds the binaries into target/release.
# Tests and binaries share the release profile so candle is compiled once.

CARGO ?= cargo
BIN := target/release

.PHONY: build test bench clean

build:
	$(CARGO) build --release --bins

test:
	$(CARGO) test --release

bench:
	$(CARGO) bench

clean:
	$(CARGO) clean
