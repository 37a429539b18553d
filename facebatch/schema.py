"""The library's tables, in one place. The README's "Tables" section documents the same columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

# Photo statuses. `gone`: the file was scanned once and is no longer on disk; its faces are dropped.
STATUS_OK = "ok"
STATUS_NO_FACES = "no_faces"
STATUS_ERROR = "error"
STATUS_GONE = "gone"
LIVE_STATUSES = frozenset({STATUS_OK, STATUS_NO_FACES})
# error_kind of a photo that failed (README, "Bad input"): imageload's and the scan's.
ERROR_KINDS = ("empty_file", "not_found", "permission_denied", "unreadable", "not_an_image", "truncated", "too_large",
               "unsupported_format", "decode_failed", "internal", "worker_failed")

PHOTOS_SCHEMA = pa.schema(
    [
        pa.field("photo_id", pa.string(), nullable=True),  # content hash; null when the file can't be read
        pa.field("path", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("mtime", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("width", pa.int32(), nullable=True),  # after EXIF rotation
        pa.field("height", pa.int32(), nullable=True),
        pa.field("n_faces", pa.int32(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # ok | no_faces | error | gone
        pa.field("error_kind", pa.string(), nullable=True),  # empty_file, not_an_image, truncated, ...
        pa.field("error", pa.string(), nullable=True),
        pa.field("scanned_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("kind", pa.string(), nullable=True),  # photo | video; null in parts written before videos
        pa.field("duration", pa.float32(), nullable=True),  # a video's length in seconds
    ]
)
KIND_PHOTO, KIND_VIDEO = "photo", "video"

FACES_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),  # hash of photo_id and box: stable across re-scans
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # a live path of that photo
        pa.field("face_index", pa.int16(), nullable=False),  # order in the photo, by detection score
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),  # x1, y1, x2, y2, original pixels
        pa.field("score", pa.float32(), nullable=False),
        # x, y of left eye, right eye, nose, mouth left, mouth right, original pixels
        pa.field("landmarks", pa.list_(pa.float32(), 10), nullable=False),
        # L2-normalised, of the model's dimension (512 FaceNet, 128 SFace, 640 both): models.catalog
        pa.field("embedding", pa.large_list(pa.float32()), nullable=False),  # 64-bit offsets: millions of faces
        pa.field("model", pa.string(), nullable=False),  # the model tag: models.embedding
        # Degrees clockwise the photo was turned to find the face (--find-rotated): 90 or 270; null
        # or 0 upright (rows written before it was recorded read as null).
        pa.field("rotation", pa.int16(), nullable=True),
        # 0..1 from box, score and landmarks (models.quality); null in parts written before it was
        # recorded (Library.read_faces computes it there)
        pa.field("quality", pa.float32(), nullable=True),
        # A face of a video is one person in it: the frame where it is seen best (seconds from the
        # start; its box and embedding are that frame's) and the first and last frame it is seen in.
        pa.field("video_time", pa.float32(), nullable=True),
        pa.field("video_span", pa.list_(pa.float32(), 2), nullable=True),
    ]
)



def embedding_column(embeddings: np.ndarray) -> pa.Array:
    """An (n, d) array as the faces table's `embedding` column, without a Python object per row."""
    x = np.ascontiguousarray(embeddings, np.float32)
    offsets = np.arange(len(x) + 1, dtype=np.int64) * x.shape[1]
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(x.reshape(-1)))


# Faces the user had forgotten (`facebatch forget`): no embedding, no name; what a re-scan needs to
# leave them out (the face id, and the photo and box to know the face again when detection moves).
FORGOTTEN_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("photo_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # an edited photo (new content) at that path too
        pa.field("box", pa.list_(pa.float32(), 4), nullable=False),
        pa.field("video_span", pa.list_(pa.float32(), 2), nullable=True),  # a video's: when it was seen
        pa.field("forgotten_at", pa.timestamp("ms", tz="UTC"), nullable=False),
    ]
)


# --------------------------------------------------------------------------- people (derived by `cluster`)

UNCLUSTERED = -1

CLUSTERS_SCHEMA = pa.schema(
    [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("cluster_id", pa.int64(), nullable=False),  # -1: in no cluster
        # One centre of the cluster's person (a cluster the user merged may have several, e.g. a
        # child at 2 and at 12); numbered per run, -1 when unclustered
        pa.field("mode", pa.int64(), nullable=False),
        # distance from the face to the centre of the other faces of its mode (0..2); null when alone
        pa.field("distance", pa.float32(), nullable=True),
        pa.field("first_run", pa.int64(), nullable=False),  # the clustering run that first saw this face
        # In its cluster's core (within the 90th percentile of its mode's distances): what naming
        # the cluster confirms; the rest wait for a look. Null in tables written before: all core.
        pa.field("core", pa.bool_(), nullable=True),
    ]
)

# Each cluster's nearest other clusters: what `clusters --similar` and merge suggestions show.
CLUSTER_PAIRS_SCHEMA = pa.schema(
    [
        pa.field("cluster_id", pa.int64(), nullable=False),
        pa.field("other_id", pa.int64(), nullable=False),
        pa.field("distance", pa.float32(), nullable=False),  # between the two clusters' centres
    ]
)

# --------------------------------------------------------------------------- what the user said

LABELS_SCHEMA = pa.schema(
    [
        pa.field("action", pa.int64(), nullable=False),  # one user action (a command, a click)
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # name | not | merge | ignore | split
        pa.field("value", pa.string(), nullable=False),  # a name, or a group token
        pa.field("active", pa.bool_(), nullable=False),  # false: the slot is emptied
        pa.field("source", pa.string(), nullable=False),  # face | cluster | xmp
        pa.field("run", pa.int64(), nullable=False),  # the clustering run the user saw when acting
        pa.field("created_at", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("undoes", pa.int64(), nullable=True),  # the action this one undoes
    ]
)
