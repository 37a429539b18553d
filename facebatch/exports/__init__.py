"""What leaves the library for other tools, and what comes back from them.

    tagged.py        the one join every export writes from: each live face, its box and its tag
    tags.py          per-photo tags (json, jsonl, parquet)
    xmp.py           export-xmp: named faces into XMP sidecars (MWG and MP regions, people lists),
                     merged into what other tools wrote
    xmp_import.py    import-xmp: names in other tools' face regions (sidecars, embedded) become labels
    xmp_regions.py   face regions: the shown <-> stored frame for EXIF orientations 1-8, reading
                     MWG and MP regions, IoU
    xmp_packet.py    XMP as bytes: elements with their byte spans (expat), splices, new fragments
"""
