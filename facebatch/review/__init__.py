"""Seeing the people: face thumbnails and the review site.

    thumbnails.py   face crops made once from the originals and cached in the library
    report.py       the static site and contact sheets
"""
