#!/usr/bin/env bash
# Installs everything the gateway benchmark needs into ./.peers (git-ignored), builds
# the mock upstream, the null proxy and the stream load generator (./mock-upstream, its
# own cargo project, not part of the crate's build), and our gateway
# (`cargo build --release --example proxy` of the crate). Idempotent: re-running skips
# what is already installed.
#
#   ./setup.sh             everything (LiteLLM and Portkey need PyPI and npm)
#   ./setup.sh --no-peers  only oha, mock-upstream and ours (enough for --suts nullproxy,ours)
# Pinned versions (change here, and in README.md):
LITELLM_VERSION="${LITELLM_VERSION:-1.104.5}"
PORTKEY_VERSION="${PORTKEY_VERSION:-1.15.2}"
OHA_VERSION="${OHA_VERSION:-1.16.0}"
# Portkey 1.15.2 declares @hono/node-server ^1.3.3, so npm picks the newest 1.x
# (1.19.x), with which streamed chat completions fail ("TypeError: immutable",
# Portkey-AI/gateway#1389 / #1550). Pin the adapter to the last release that
# streams correctly; set PORTKEY_HONO_NODE_SERVER= (empty) for npm's own choice.
PORTKEY_HONO_NODE_SERVER="${PORTKEY_HONO_NODE_SERVER-1.13.8}"
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PEERS="$HERE/.peers"
WITH_PEERS=1
for a in "$@"; do
  case "$a" in
    --no-peers) WITH_PEERS=0 ;;
    *) echo "usage: $0 [--no-peers]" >&2; exit 2 ;;
  esac
done
mkdir -p "$PEERS/bin"
log() { printf '[setup] %s\n' "$*" >&2; }

# 1. LiteLLM proxy, in its own venv, as its docs install it.
if [ "$WITH_PEERS" = 0 ]; then
  log "skipping LiteLLM and Portkey (--no-peers)"
elif [ -x "$PEERS/litellm-venv/bin/litellm" ] && \
   [ "$("$PEERS/litellm-venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))' 2>/dev/null)" = "$LITELLM_VERSION" ]; then
  log "litellm $LITELLM_VERSION already installed"
else
  log "installing litellm[proxy]==$LITELLM_VERSION into $PEERS/litellm-venv"
  python3 -m venv "$PEERS/litellm-venv"
  "$PEERS/litellm-venv/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
fi

# 2. Portkey gateway from npm, pinned (no global install; run with node from node_modules).
portkey_pkg_json() {
  if [ -n "$PORTKEY_HONO_NODE_SERVER" ]; then
    printf '{"name":"bench-portkey","private":true,"dependencies":{"@portkey-ai/gateway":"%s"},"overrides":{"@hono/node-server":"%s"}}\n' \
      "$PORTKEY_VERSION" "$PORTKEY_HONO_NODE_SERVER"
  else
    printf '{"name":"bench-portkey","private":true,"dependencies":{"@portkey-ai/gateway":"%s"}}\n' "$PORTKEY_VERSION"
  fi
}
if [ "$WITH_PEERS" = 0 ]; then
  :
elif [ -f "$PEERS/portkey/node_modules/@portkey-ai/gateway/package.json" ] && \
   [ "$(cat "$PEERS/portkey/package.json" 2>/dev/null)" = "$(portkey_pkg_json)" ]; then
  log "@portkey-ai/gateway $PORTKEY_VERSION already installed"
else
  log "installing @portkey-ai/gateway@$PORTKEY_VERSION into $PEERS/portkey (@hono/node-server override: ${PORTKEY_HONO_NODE_SERVER:-none})"
  mkdir -p "$PEERS/portkey"
  portkey_pkg_json > "$PEERS/portkey/package.json"
  # the package's only install script is `patch-package` with no patches shipped; npm 11 skips it
  (cd "$PEERS/portkey" && npm install --no-fund --no-audit)
fi

# 3. Load generator: oha from crates.io.
if [ -x "$PEERS/bin/oha" ] && "$PEERS/bin/oha" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  log "oha $OHA_VERSION already installed"
else
  log "building oha $OHA_VERSION (cargo install --locked), this takes a few minutes on 2 cores"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --version "$OHA_VERSION" --root "$PEERS" oha
fi

# 4. The mock OpenRouter-compatible upstream, the null proxy and stream-load: its own
# target dir (whatever CARGO_TARGET_DIR says), where run.sh looks for them.
log "building mock-upstream, null-proxy, stream-load (release)"
(cd "$HERE/mock-upstream" && export CARGO_TARGET_DIR="$HERE/mock-upstream/target" && \
  { cargo build --quiet --release --locked 2>/dev/null || cargo build --quiet --release; })

# 5. Our gateway: the crate's proxy example (run.sh's `ours`), built with the same release
# profile as the null proxy above (thin LTO, 4 codegen units, panic=abort), in its own
# target dir so the crate's usual release builds are left alone.
OURS_TARGET="${OURS_TARGET_DIR:-$PEERS/target}"
log "building the gateway example (cargo build --release --example proxy) into $OURS_TARGET"
(cd "$REPO" && CARGO_TARGET_DIR="$OURS_TARGET" CARGO_PROFILE_RELEASE_LTO=thin \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=4 CARGO_PROFILE_RELEASE_PANIC=abort \
  cargo build --quiet --release --example proxy)

log "done:"
if [ "$WITH_PEERS" = 1 ]; then
  "$PEERS/litellm-venv/bin/python" -c 'import importlib.metadata as m; print("  litellm", m.version("litellm"))'
  echo "  @portkey-ai/gateway $(node -p "require('$PEERS/portkey/node_modules/@portkey-ai/gateway/package.json').version") (@hono/node-server $(node -p "require('$PEERS/portkey/node_modules/@hono/node-server/package.json').version"))"
fi
echo "  $("$PEERS/bin/oha" --version)"
echo "  mock-upstream $HERE/mock-upstream/target/release/mock-upstream"
echo "  ours $OURS_TARGET/release/examples/proxy"
