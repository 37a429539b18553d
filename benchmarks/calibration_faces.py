"""Make facebatch/models/calibration_faces.npz: the crops int8 quantisation is calibrated on.

Every face MTCNN finds in sample_data/ (redistributable photos), cropped as the scan crops it for
FaceNet (`faces`) and aligned for SFace (`sface`). The quantisers (facebatch.models.quantize and
sface_int8) read the file; a test checks it still matches sample_data/.

    .venv/bin/python benchmarks/calibration_faces.py sample_data
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from facebatch.models.quantize import CALIBRATION_FILE, calibration_crops_from  # noqa: E402


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python benchmarks/calibration_faces.py SAMPLE_DATA_FOLDER")
    faces, sface = (calibration_crops_from(Path(argv[0]), model) for model in ("facenet", "sface"))
    target = Path(__file__).resolve().parent.parent / "facebatch" / "models" / CALIBRATION_FILE
    np.savez_compressed(target, faces=faces, sface=sface)
    print(f"{len(faces)} faces, {len(sface)} aligned for SFace -> {target}")


if __name__ == "__main__":
    main(sys.argv[1:])
