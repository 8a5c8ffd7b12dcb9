"""Decoding and embedding on a Ray cluster, for `photoseek index --ray`.

The driver keeps walking, planning, hashing and the catalog (`indexer.pipeline`); this room
holds what runs on the cluster (`worker`: a class UDF for Ray Data's `map_batches`) and what
drives it (`ray_run`: the dataset, its actor pool, and the results streamed back). Ray itself
is an optional extra, imported only when a run asks for it.
"""
