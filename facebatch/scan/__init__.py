"""Scanning: from folders of photos to the library's photos and faces tables.

    discovery.py   walking folders: which files are photos, include/exclude globs, links
    pipeline.py    one shard on one worker: read, hash, decode, detect, crop, embed; a row per photo
    driver.py      the scan: plan against the tables, run shards on Dask, write parts, reconcile
"""
