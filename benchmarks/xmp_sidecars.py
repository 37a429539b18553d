"""Which XMP library for export-xmp: time to add four face regions (MWG + MP, with the names in
PersonInImage, digiKam:TagsList and lr:hierarchicalSubject) to N existing sidecars, and whether
what other tools wrote survives: byte for byte, and as tags ExifTool reads.

The existing sidecar is real: the XMP that sample_data/groups/situation_room_2011.jpg carries
(29 KB written by Photoshop, Photo Mechanic and ExifTool: 4 MWG and 4 MP regions, keywords,
captions, 150 fields). Methods:

    splice     facebatch.exports.xmp (the standard library's expat; splices bytes)
    pyexiv2    exiv2 through pyexiv2 (its wheel ships libexiv2)
    libxmp     Exempi through python-xmp-toolkit (needs Debian's libexempi8)
    exiftool   ExifTool: one process reads every file's regions, one writes them back (-json=)

Those not installed are reported as such. To run them all:

    python3 -m venv /tmp/xmpbench && /tmp/xmpbench/bin/pip install pyexiv2 python-xmp-toolkit
    apt-get install libexempi8 libimage-exiftool-perl
    PYTHONPATH=/tmp/xmpbench/lib/python3.11/site-packages .venv/bin/python benchmarks/xmp_sidecars.py [--sidecars 1000]
"""

from __future__ import annotations

import argparse
import difflib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from facebatch.exports.xmp import FaceRegion, merge_sidecar
from facebatch.exports.xmp_packet import IPTC_EXT, MP, MPREG, MPRI, MWG_RS, ST_AREA, embedded_xmp
from facebatch.exports.xmp_regions import Box

SOURCE = Path(__file__).resolve().parents[1] / "sample_data" / "groups" / "situation_room_2011.jpg"
SIZE = (1500, 1000)
# Four faces along the bottom of the photo, where its own regions are not.
REGIONS = [FaceRegion(f"face{i}", name, "confirmed", Box(0.1 + 0.2 * i, 0.85, 0.15 + 0.2 * i, 0.95))
           for i, name in enumerate(["Alice", "Bob", "Carol", "Dan"])]
TOUCHED = {"RegionInfo", "RegionInfoMP", "PersonInImage", "TagsList", "HierarchicalSubject", "XMPToolkit"}


def splice(paths: list[Path]) -> None:
    for path in paths:
        path.write_bytes(merge_sidecar(path.read_bytes(), REGIONS, SIZE).data)


def _centre(r: FaceRegion) -> tuple[float, float, float, float]:
    b = r.box
    return (b.x1 + b.x2) / 2, (b.y1 + b.y2) / 2, b.x2 - b.x1, b.y2 - b.y1


def pyexiv2_write(paths: list[Path]) -> None:
    import pyexiv2

    for path in paths:
        image = pyexiv2.Image(str(path))
        xmp = image.read_xmp()
        mwg = 1 + sum(1 for k in xmp if k.endswith("/mwg-rs:Name"))
        mp = 1 + sum(1 for k in xmp if k.endswith("/MPReg:PersonDisplayName"))
        changes: dict[str, object] = {}
        for i, r in enumerate(REGIONS):
            x, y, w, h = _centre(r)
            base = f"Xmp.mwg-rs.Regions/mwg-rs:RegionList[{mwg + i}]"
            changes.update({f"{base}/mwg-rs:Name": r.name, f"{base}/mwg-rs:Type": "Face",
                            f"{base}/mwg-rs:Area/stArea:x": str(x), f"{base}/mwg-rs:Area/stArea:y": str(y),
                            f"{base}/mwg-rs:Area/stArea:w": str(w), f"{base}/mwg-rs:Area/stArea:h": str(h),
                            f"{base}/mwg-rs:Area/stArea:unit": "normalized"})
            mp_base = f"Xmp.MP.RegionInfo/MPRI:Regions[{mp + i}]"
            changes.update({f"{mp_base}/MPReg:PersonDisplayName": r.name,
                            f"{mp_base}/MPReg:Rectangle": f"{r.box.x1}, {r.box.y1}, {w}, {h}"})
        for key, form in (("Xmp.iptcExt.PersonInImage", "{}"), ("Xmp.digiKam.TagsList", "People/{}"),
                          ("Xmp.lr.hierarchicalSubject", "People|{}")):
            changes[key] = list(xmp.get(key, [])) + [form.format(r.name) for r in REGIONS]
        image.modify_xmp(changes)
        image.close()


def libxmp_write(paths: list[Path]) -> None:
    from libxmp import XMPMeta

    for path in paths:
        meta = XMPMeta(xmp_str=path.read_text())
        for uri, prefix in ((MWG_RS, "mwg-rs"), (ST_AREA, "stArea"), (MP, "MP"), (MPRI, "MPRI"), (MPREG, "MPReg")):
            meta.register_namespace(uri, prefix)
        mwg = meta.count_array_items(MWG_RS, "Regions/mwg-rs:RegionList")
        mp = meta.count_array_items(MP, "RegionInfo/MPRI:Regions")
        for i, r in enumerate(REGIONS):
            x, y, w, h = _centre(r)
            base = f"Regions/mwg-rs:RegionList[{mwg + i + 1}]"
            meta.set_property(MWG_RS, f"{base}/mwg-rs:Name", r.name)
            meta.set_property(MWG_RS, f"{base}/mwg-rs:Type", "Face")
            for field, value in (("x", x), ("y", y), ("w", w), ("h", h), ("unit", "normalized")):
                meta.set_property(MWG_RS, f"{base}/mwg-rs:Area/stArea:{field}", str(value))
            mp_base = f"RegionInfo/MPRI:Regions[{mp + i + 1}]"
            meta.set_property(MP, f"{mp_base}/MPReg:PersonDisplayName", r.name)
            meta.set_property(MP, f"{mp_base}/MPReg:Rectangle", f"{r.box.x1}, {r.box.y1}, {w}, {h}")
            meta.append_array_item(IPTC_EXT, "PersonInImage", r.name, {"prop_array_is_unordered": True})
        path.write_text(meta.serialize_to_str())


def exiftool_write(paths: list[Path]) -> None:
    folder = paths[0].parent
    done = subprocess.run(["exiftool", "-j", "-struct", "-RegionInfo", "-RegionInfoMP", "-PersonInImage", "-TagsList",
                           "-HierarchicalSubject", "-ext", "xmp", str(folder)], capture_output=True, check=True)
    updates = []
    for tags in json.loads(done.stdout):
        info = tags.get("RegionInfo", {"AppliedToDimensions": {"W": SIZE[0], "H": SIZE[1], "Unit": "pixel"}, "RegionList": []})
        mp = tags.get("RegionInfoMP", {"Regions": []})
        for r in REGIONS:
            x, y, w, h = _centre(r)
            area = {"X": x, "Y": y, "W": w, "H": h, "Unit": "normalized"}
            info["RegionList"].append({"Area": area, "Name": r.name, "Type": "Face"})
            mp["Regions"].append({"PersonDisplayName": r.name, "Rectangle": f"{r.box.x1}, {r.box.y1}, {w}, {h}"})
        update = {"SourceFile": tags["SourceFile"], "RegionInfo": info, "RegionInfoMP": mp}
        for key, form in (("PersonInImage", "{}"), ("TagsList", "People/{}"), ("HierarchicalSubject", "People|{}")):
            have = tags.get(key, [])
            update[key] = (have if isinstance(have, list) else [have]) + [form.format(r.name) for r in REGIONS]
        updates.append(update)
    argument = folder.parent / "updates.json"
    argument.write_text(json.dumps(updates))
    subprocess.run(["exiftool", "-q", "-overwrite_original", f"-json={argument}", "-ext", "xmp", str(folder)], check=True)


METHODS: dict[str, tuple[Callable[[list[Path]], None], str]] = {
    "splice": (splice, ""),
    "pyexiv2": (pyexiv2_write, "pyexiv2"),
    "libxmp": (libxmp_write, "libxmp"),
    "exiftool": (exiftool_write, ""),
}


def available(name: str, module: str) -> str | None:
    if name == "exiftool" or name == "splice":
        return None if name == "splice" or shutil.which("exiftool") else "exiftool not on PATH"
    try:
        __import__(module)
    except Exception as error:  # noqa: BLE001 - a missing shared library raises OSError, not ImportError
        return f"not installed ({type(error).__name__})"
    return None


def read_tags(path: Path) -> dict:
    done = subprocess.run(["exiftool", "-j", "-struct", "-G1", str(path)], capture_output=True, check=True)
    tags = json.loads(done.stdout)[0]
    return {k: v for k, v in tags.items() if k.split(":")[0] not in ("System", "File", "ExifTool") and k != "SourceFile"}


def foreign_changes(before: dict, after: dict) -> int:
    """Tags other tools wrote that are gone or differ (the ones facebatch adds to are left out)."""
    return sum(1 for k, v in before.items() if k.split(":")[-1] not in TOUCHED and after.get(k) != v)


def regions_kept(before: dict, after: dict) -> str:
    def names(tags: dict) -> list[str]:
        info = next((v for k, v in tags.items() if k.endswith(":RegionInfo")), {})
        return [r.get("Name") for r in info.get("RegionList", [])]

    old, new = names(before), names(after)
    return f"{sum(1 for n in old if n in new)}/{len(old)} theirs, {sum(1 for r in REGIONS if r.name in new)}/4 ours"


def only_inserted(original: bytes, merged: bytes) -> bool:
    """Every byte of `original` still in `merged`, in order. A file written anew fails the quick
    subsequence test at once; the diff (slow on such files) decides the rest."""
    at = 0
    for byte in original:
        at = merged.find(byte, at) + 1
        if at == 0:
            return False
    ops = difflib.SequenceMatcher(None, original, merged, autojunk=False).get_opcodes()
    return all(op in ("equal", "insert") for op, *_ in ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sidecars", type=int, default=1000)
    args = parser.parse_args()
    with Image.open(SOURCE) as image:
        original = embedded_xmp(image)
    assert original is not None
    print(f"{args.sidecars} sidecars of {len(original):,} bytes each (the XMP of {SOURCE.name}), 4 regions added to each\n")
    print("| method | seconds | per sidecar | foreign bytes unchanged | foreign tags changed or lost | regions after |")
    print("|---|---|---|---|---|---|")
    before = read_tags_of(original) if shutil.which("exiftool") else None
    for name, (write, module) in METHODS.items():
        missing = available(name, module)
        if missing:
            print(f"| {name} | {missing} | | | | |")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "sidecars"
            folder.mkdir()
            paths = [folder / f"photo{i:05d}.jpg.xmp" for i in range(args.sidecars)]
            for path in paths:
                path.write_bytes(original)
            start = time.perf_counter()
            write(paths)
            seconds = time.perf_counter() - start
            result = paths[0].read_bytes()
            bytes_kept = "yes" if only_inserted(original, result) else "no"
            if before is not None:
                after = read_tags(paths[0])
                tags, regions = str(foreign_changes(before, after)), regions_kept(before, after)
            else:
                tags = regions = "(no exiftool)"
        print(f"| {name} | {seconds:.2f} | {seconds / args.sidecars * 1000:.2f} ms | {bytes_kept} | {tags} | {regions} |")
    print(f"\n{' '.join(sys.argv)}")


def read_tags_of(data: bytes) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "original.xmp"
        path.write_bytes(data)
        return read_tags(path)


if __name__ == "__main__":
    main()
