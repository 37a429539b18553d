"""Scanning: from folders of photos to the library's photos and faces tables.

    discovery.py   walking folders: which files are photos and videos, include/exclude globs, links,
                   a RAW + JPEG pair as one photo
    pipeline.py    one shard on one worker: read, hash, decode, detect, crop, embed; a row per photo
    video.py       one video on a worker: its keyframes' faces grouped by person, a face row each
    driver.py      the scan: plan against the tables, run shards on Dask, write parts, reconcile
"""
