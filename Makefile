# codeexec: make run starts the server, make test runs every check CI runs.
# Both install the Debian packages they need first (scripts/deps.sh, as root).

# Go is often unpacked in /usr/local/go without being put on PATH.
export PATH := $(PATH):/usr/local/go/bin

BIN       := bin/codeexec
# ARGS are passed to `codeexec serve`, e.g. make run ARGS='--addr 127.0.0.1:9090'.
ARGS      ?=
# TESTFLAGS are passed to go test, e.g. make test TESTFLAGS='-run Seccomp -v'.
TESTFLAGS ?=

.PHONY: all deps build run test bench clean

all: build

deps:
	@echo "==> checking Debian packages (scripts/deps.sh)"
	@./scripts/deps.sh

build:
	@echo "==> go build -o $(BIN) ./cmd/codeexec"
	@go build -o $(BIN) ./cmd/codeexec

run: deps build
	./$(BIN) serve $(ARGS)

test: deps
	@echo "==> go vet ./..."
	@go vet ./...
	@echo "==> gofmt -l (every Go file must be formatted)"
	@files=$$(gofmt -l . | grep -v '/testdata/' || true); \
	if [ -n "$$files" ]; then \
		echo "these files need gofmt -w:"; echo "$$files"; exit 1; \
	fi
	@echo "==> $(strip go test -count=1 -timeout 30m $(TESTFLAGS) ./...)"
	@go test -count=1 -timeout 30m $(TESTFLAGS) ./...

bench: deps build
	./$(BIN) bench
	@echo "==> time the chat tool loop adds per model turn (target <= 1 ms)"
	go test -run '^$$' -bench LoopTurn -benchtime 2s ./internal/toolloop/

clean:
	rm -rf bin
	go clean -testcache
