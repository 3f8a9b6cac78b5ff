"""Images: references, platforms, media types, the registry client and what pulls use them.

This package owns everything about an image short of where its bytes land: parsing and
normalising references (`reference`), platform strings and matching (`platforms`), OCI and
Docker media types (`mediatypes`), containerd's hosts directory (`hosts`) and the OCI
distribution client (`registry`). The pull pipeline, import/export and push build on these and
on the content store, the differ and the snapshotters.
"""
