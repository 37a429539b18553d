"""What leaves the library for other tools.

    tags.py   per-photo tags (json, jsonl, parquet)
"""
