"""A fleet's releases: a TUF repository a release pipeline publishes bundles to
(`repository`), and the devices' update from it (`update`), over plain HTTP.

The Update Framework (python-tuf, its reference implementation) is what the update
systems fleets trust build on: its signed metadata (root, targets, snapshot, timestamp)
protect what a device downloads against tampering, replayed or rolled-back metadata and a
repository frozen in the past, each by a rule of the specification that python-tuf's
client enforces. edgefreeze adds what is particular to bundles: a release is a bundle's
files as targets plus an index of releases (`layout`), and a device fetches only the
files its serving version lacks, then installs as `edgefreeze device install` does.
"""
