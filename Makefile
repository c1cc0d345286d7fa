# make check is the quality gate a change must pass before it is pushed:
# formatting, vet, staticcheck (all checks), govulncheck and the tests
# under the race detector. .ci/run runs the same targets (and more: real
# MariaDB and Redis, network namespaces, a Redis Cluster, the README).
#
# The Go that builds what is shipped is go.mod's toolchain line (its
# standard library has the fixes govulncheck asks for); the go command
# takes it from the module proxy on first use. Override with
# make GOTOOLCHAIN=local … to use the Go on the PATH.

GOTOOLCHAIN ?= $(shell sed -n 's/^toolchain //p' go.mod)
export GOTOOLCHAIN

STATICCHECK := go run honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: check fmt vet staticcheck layers vulncheck lint test race

check: lint vulncheck race

lint: fmt vet staticcheck layers

fmt:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

staticcheck:
	$(STATICCHECK) -checks all ./...

# layers: the public packages, for anyone who writes a service or a gate,
# import nothing under internal/ (CONTRIBUTING.md, "Layers").
layers:
	@bad=$$(go list -deps ./packet ./distributor ./service ./gate | grep '^github.com/microshop/microshop/internal/'); \
	if [ -n "$$bad" ]; then echo "a public package imports internal packages:"; echo "$$bad"; exit 1; fi

vulncheck:
	bash scripts/vulncheck.sh

# test is the README's test command: embedded SQLite and Redis, no setup.
test:
	go test ./...

# race runs every test under the race detector; set MICROSHOP_TEST_MYSQL
# and MICROSHOP_TEST_REDIS to run them against real servers too.
race:
	go test -race -timeout 20m ./...
