#!/usr/bin/env bash
# deps.sh installs the Debian packages codeexec and its tests need on a
# Debian or Ubuntu host: python3 with the libraries the sandbox offers, a
# font for matplotlib, CA certificates, and the kernel headers one test
# reads. It is idempotent: it installs only what is missing and runs apt-get
# update only when something must be installed. Run it as root; otherwise it
# prints what is missing and the command to run, and exits 1.
set -euo pipefail

packages=(
	python3
	python3-numpy
	python3-pandas
	python3-matplotlib
	python3-scipy
	python3-sympy
	python3-requests
	python3-pil
	# pip install at run time, into a sandbox's /tmp (internal/python/runner.py).
	python3-pip
	# The other libraries of the sandbox (internal/python/libraries.go).
	python3-seaborn
	python3-sklearn
	python3-statsmodels
	python3-openpyxl
	python3-xlrd
	python3-xlsxwriter
	python3-networkx
	python3-docx
	python3-pypdf
	python3-bs4
	python3-lxml
	python3-tabulate
	python3-reportlab
	python3-plotly
	# Command-line tools for language "bash" (coreutils, grep, sed, gawk,
	# findutils and bash are essential packages, always there).
	unzip
	sqlite3
	file
	fonts-dejavu-core
	ca-certificates
	# For the tests only: TestSeccompSyscallNumbers checks the filter's
	# syscall numbers against /usr/include/x86_64-linux-gnu/asm/unistd_64.h.
	linux-libc-dev
	# For the tests only: TestPlayground drives the playground page at / in
	# a headless chromium (internal/server/playground_linux_test.go).
	chromium
)

# For the tests only: the store's tests start a PostgreSQL server of their
# own in a temporary directory (initdb and postgres from this package; the
# cluster the package may start is not used).
packages+=(postgresql)

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "deps: dpkg-query not found: this script supports Debian and Ubuntu only." >&2
	echo "deps: install these packages (or their equivalents) by hand: ${packages[*]}" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	if [ "$status" != installed ]; then
		missing+=("$p")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: all ${#packages[@]} Debian packages present"
else
	cmd="apt-get install -y ${missing[*]}"
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing Debian packages: ${missing[*]}" >&2
		echo "deps: run as root: apt-get update && $cmd" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# With Recommends, as on the hosts codeexec is measured on: pandas then
	# also gets bottleneck and numexpr.
	apt-get install -y -q "${missing[@]}"
fi

# Go cannot come from Debian's archive (its golang package is too old for
# go.mod); the Makefile also looks in /usr/local/go/bin.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	want=$(sed -n 's/^go //p' "$(dirname "$0")/../go.mod")
	echo "deps: Go not found on PATH or in /usr/local/go/bin; install Go $want or newer from the Go project's downloads" >&2
	exit 1
fi
