#!/usr/bin/env bash
# Builds the Go yamux peer (test/mux/go-peer/peer.go) against HashiCorp's yamux as Debian packages
# it (golang-github-hashicorp-yamux-dev, under /usr/share/gocode), offline, in GOPATH mode. The
# binary goes to .cache/mux-go-peer/peer in the repository (or $XEN_VCHAN_MUX_GO_PEER) and is
# rebuilt only when peer.go, this script, the yamux sources or the Go version change.
#
# When Go or the yamux sources are missing: as root with apt-get, installs them
# (golang-go golang-github-hashicorp-yamux-dev); otherwise fails saying which command to run.
#
# usage: test/mux/go-peer/build.sh [--force]     prints the binary's path on its last line
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
out=${XEN_VCHAN_MUX_GO_PEER:-$root/.cache/mux-go-peer/peer}
gopath=/usr/share/gocode
yamux=$gopath/src/github.com/hashicorp/yamux
packages=(golang-go golang-github-hashicorp-yamux-dev)

present() { command -v go >/dev/null 2>&1 && [ -f "$yamux/session.go" ]; }

if ! present; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "go-peer: installing ${packages[*]} (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${packages[@]}" >&2 ||
      { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${packages[@]}" >&2; }
  fi
  present || {
    echo "go-peer: the Go yamux interop tests need Go and HashiCorp's yamux sources; install them with:" >&2
    echo "  sudo apt-get install ${packages[*]}" >&2
    exit 1
  }
fi

key=$(cat "$here/peer.go" "${BASH_SOURCE[0]}" "$yamux"/*.go <(go version) | sha256sum | cut -d' ' -f1)
if [ "${1:-}" != --force ] && [ -x "$out" ] && [ "$(cat "$out.stamp" 2>/dev/null)" = "$key" ]; then
  echo "$out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
# GOPATH mode: imports come from the packaged sources; nothing is fetched (GOPROXY=off).
(cd "$here" && GO111MODULE=off GOPATH=$gopath GOCACHE=$cache GOPROXY=off GOFLAGS= \
  go build -o "$out.new" peer.go)
mv "$out.new" "$out"
echo "$key" > "$out.stamp"
echo "go-peer: built $out" >&2
echo "$out"
