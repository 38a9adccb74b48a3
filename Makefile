# vstor: the two commands are `make run` and `make test`; both set up what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export DEBIAN_FRONTEND := noninteractive

# Debian packages the project needs on the host (peers for interop tests, image tooling).
HOST_PACKAGES := qemu-utils seabios gcc-multilib binutils genisoimage syslinux syslinux-common isolinux mtools dosfstools
STAMP := build/.stamps
VSTOR := node dist/vstor.mjs
VM ?= vstor-default
ARGS ?=

.PHONY: help setup build images check test test-unit test-guest run bench clean

help:
	@echo "make run    boot the bundled Linux guest on an interactive serial console (ARGS='--script FILE' to run a script)"
	@echo "make test   set up everything, then run unit, interop and guest tests"
	@echo "make bench  benchmarks against peers measured in the same run"

# Re-checked when this file changes (a package added to HOST_PACKAGES gets installed).
$(STAMP)/apt: Makefile
	@mkdir -p $(STAMP)
	@missing=$$(for p in $(HOST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq || true; \
	  apt-get install -y -qq $$missing; \
	fi
	@touch $@

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

setup: $(STAMP)/apt node_modules/.package-lock.json

build: setup
	node build.mjs

images: setup
	node images/build.mjs

check: setup
	npx tsc -p tsconfig.common.json
	npx tsc -p tsconfig.json
	node tools/check-layers.mjs

test-unit: check
	npx vitest run

test-guest: build images
	npx vitest run --config guest-tests/vitest.config.ts

test: check build images
	npx vitest run
	npx vitest run --config guest-tests/vitest.config.ts

# The default machine, booted by SeaBIOS from a SATA disk: the guest's boot disk
# (build/guest/boot.img: syslinux, kernel, initramfs) cloned into a 256 MB dynamic VDI on
# port 0 of an AHCI controller, and on port 1 a SATA DVD drive with an ISO of vstor's manuals.
VSTOR_HOME ?= $(HOME)/.config/vstor
DISK := $(VSTOR_HOME)/machines/$(VM)/disk.vdi
DOCS_ISO := $(VSTOR_HOME)/machines/$(VM)/vstor-docs.iso
run: build images
	@if ! $(VSTOR) showvminfo $(VM) >/dev/null 2>&1; then \
	  $(VSTOR) createvm --name $(VM) --register >/dev/null && \
	  $(VSTOR) clonemedium disk build/guest/boot.img "$(DISK)" --format VDI >/dev/null && \
	  $(VSTOR) modifymedium disk "$(DISK)" --resize 256 >/dev/null && \
	  $(VSTOR) storagectl $(VM) --name SATA --add sata --controller IntelAhci --portcount 4 >/dev/null && \
	  $(VSTOR) storageattach $(VM) --storagectl SATA --port 0 --device 0 --type hdd --medium "$(DISK)" >/dev/null && \
	  genisoimage -quiet -V VSTOR_DOCS -R -J -graft-points -o "$(DOCS_ISO)" README.md=README.md images.md=images/README.md agent-protocol.md=guest-tests/agent-protocol.md && \
	  $(VSTOR) storageattach $(VM) --storagectl SATA --port 1 --device 0 --type dvddrive --medium "$(DOCS_ISO)" >/dev/null && \
	  $(VSTOR) modifyvm $(VM) --boot1 disk >/dev/null; \
	fi
	$(VSTOR) startvm $(VM) --type headless $(ARGS)

bench: build images
	node --v8-pool-size=1 bench/run.mjs

clean:
	rm -rf dist build/test-bundles
