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

# Compiler bug workaround. A message named Descriptor (containerd.types) collides
# with the compiler's "from google.protobuf.descriptor import Descriptor", which
# the google_protobuf_descriptors option uses to annotate each class's
# DESCRIPTOR property; the class then shadows the import and the module fails to
# import (NameError while the class body is evaluated). Deleting the import, the
# fix for runs without that option, does not work here, so import protobuf's
# descriptor classes under private aliases and point the annotations at them.
# Applied to every generated module so they all look the same.
while IFS= read -r -d '' f; do
  sed -i -E \
    -e 's/^from google\.protobuf\.descriptor import .*$/from google.protobuf.descriptor import Descriptor as _PbDescriptor, EnumDescriptor as _PbEnumDescriptor/' \
    -e 's/^( +def DESCRIPTOR\(\) -> )Descriptor:$/\1_PbDescriptor:/' \
    -e 's/^( +def DESCRIPTOR\(\) -> )EnumDescriptor:$/\1_PbEnumDescriptor:/' \
    "$f"
done < <(grep -rlZ '^from google\.protobuf\.descriptor import ' "$OUTDIR" --include='*.py' || true)

touch "$OUTDIR/__init__.py"
