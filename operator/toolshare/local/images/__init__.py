"""The images the local node runs, built here without a registry (docs/images.md).

catalog: their names and bases; build: the content-keyed cache and the builders (pause with gcc,
the Debian base with debootstrap, the rest with buildah from a Containerfile); containerd:
`import_images`, what `toolshare cluster up` calls to give them to the node.
"""
