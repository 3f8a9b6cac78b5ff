"""Rewrite the compiler's output so importing the generated API imports neither protobuf
nor dateutil.

Run by scripts/gen_proto.sh on the tree it has just generated (`python
scripts/proto_postprocess.py OUTDIR`). An engine at rest needs only the
betterproto2 messages; what the google_protobuf_descriptors option adds for
server reflection, and dateutil, which only Timestamp's JSON parsing uses, are
loaded on first use:

- `google_proto_descriptor_pool.py` becomes scripts/proto_descriptor_pool.py, a
  pool that imports protobuf and adds the files it was given when first read;
- protobuf's descriptor classes, imported only to annotate each class's
  `DESCRIPTOR` property, are imported for type checkers only, under private
  aliases: a message named Descriptor (containerd.types) would otherwise shadow
  the compiler's `from google.protobuf.descriptor import Descriptor` while its
  class body is evaluated (a compiler bug);
- `import dateutil.parser` moves into the function that parses with it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
POOL_MODULE = "google_proto_descriptor_pool.py"

DESCRIPTOR_IMPORT_LINE = re.compile(r"^from google\.protobuf\.descriptor import .*\n", re.M)
AFTER_IMPORTS = "\n_COMPILER_VERSION = "
TYPE_CHECKING_IMPORT = (
    "from typing import TYPE_CHECKING as _TYPE_CHECKING\n"
    "\n"
    "if _TYPE_CHECKING:\n"
    "    from google.protobuf.descriptor import Descriptor as _PbDescriptor\n"
    "    from google.protobuf.descriptor import EnumDescriptor as _PbEnumDescriptor\n"
)
DESCRIPTOR_ANNOTATION = re.compile(r"^( +def DESCRIPTOR\(\) -> )(Enum)?Descriptor:$", re.M)
DATEUTIL_IMPORT = "import dateutil.parser\n"
DATEUTIL_USE = re.compile(r"^( +)(.*\bdateutil\.parser\.)", re.M)


def rewrite(source: str) -> str:
    if DESCRIPTOR_IMPORT_LINE.search(source):
        source = DESCRIPTOR_IMPORT_LINE.sub("", source, count=1)
        source = source.replace(AFTER_IMPORTS, "\n" + TYPE_CHECKING_IMPORT + AFTER_IMPORTS, 1)
        source = DESCRIPTOR_ANNOTATION.sub(r'\1"_Pb\2Descriptor":', source)
    if DATEUTIL_IMPORT in source:
        source = source.replace(DATEUTIL_IMPORT, "", 1)
        source = DATEUTIL_USE.sub(r"\1import dateutil.parser\n\n\1\2", source)
    return source


def main(outdir: Path) -> None:
    for path in sorted(outdir.rglob("*.py")):
        if path.name == POOL_MODULE and path.parent == outdir:
            path.write_text((HERE / "proto_descriptor_pool.py").read_text())
            continue
        source = path.read_text()
        rewritten = rewrite(source)
        if rewritten != source:
            path.write_text(rewritten)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
