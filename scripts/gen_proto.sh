#!/usr/bin/env bash
# Regenerate ctrdeck's Python gRPC API (core/api) from the .proto files in protos/.
#
#   scripts/gen_proto.sh [OUTDIR]      (default: core/api)
#
# Needs the dev tools in the project venv: grpcio-tools (protoc),
# betterproto2-compiler and ruff. The compiler formats its output with whatever
# ruff is on PATH, using the ruff settings found from the repository root, so
# the script always runs from there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTDIR="${1:-$ROOT/core/api}"
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"

VENV="${VENV:-$ROOT/.venv}"
PYTHON="$VENV/bin/python"
if [[ ! -x "$PYTHON" ]]; then
  PYTHON="$(command -v python3)"
fi
# The compiler plugin (protoc-gen-python_betterproto2) and ruff are found by name.
export PATH="$VENV/bin:$PATH"

cd "$ROOT"

# Start from a clean tree so removed protos do not leave stale modules behind,
# but only wipe a directory that is empty or holds a previous generated tree.
if [[ -n "$(ls -A "$OUTDIR")" && ! -f "$OUTDIR/message_pool.py" ]]; then
  echo "gen_proto.sh: $OUTDIR is not empty and not a generated tree; refusing to overwrite" >&2
  exit 1
fi
find "$OUTDIR" -mindepth 1 -delete

# Everything in ONE protoc run: each run rewrites google/protobuf/__init__.py
# and message_pool.py with only what that run needed.
mapfile -t PROTOS < <(cd protos && find . -name '*.proto' -printf '%P\n' | LC_ALL=C sort)
"$PYTHON" -m grpc_tools.protoc -I protos \
  --python_betterproto2_out="$OUTDIR" \
  --python_betterproto2_opt=client_generation=async,server_generation=async,google_protobuf_descriptors \
  "${PROTOS[@]}"

# Importing the API must not import protobuf or dateutil (an engine at rest needs
# neither), and works around a compiler bug (a message named Descriptor); see the
# post-processor's docstring.
"$PYTHON" "$ROOT/scripts/proto_postprocess.py" "$OUTDIR"

touch "$OUTDIR/__init__.py"
