"""Does a face's quality say whether its name will be right? Friends and strangers per bin of
size, pose (the nose's offset from the eyes-to-mouth midline, in eye distances) and detector score.

Every friend's face (subjects of lfw-many and lfw-dev) is compared with the centre of each friend's
faces (its own person's without it); right when its nearest is its person within the cut (confidence
0.8 on the library model's scale), wrong when another person is. Every stranger and background face
is compared with every friend's centre: "named" when one is within the cut.

    .venv/bin/python benchmarks/quality_bins.py /work/libs/sface
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import people_mix as pm  # noqa: E402

from facebatch.models.quality import nose_offset  # noqa: E402
from facebatch.store import Library  # noqa: E402

lib = Path(sys.argv[1])
mix = pm.load_mix(lib)
scale = Library((lib / "lfw-many").resolve()).scale()
cut = scale.name_distance
sc = []
lm = []
for name in pm.SETS:
    t = Library((lib / name).resolve()).read_faces(["score", "landmarks"])
    sc += t["score"].to_pylist()
    lm += t["landmarks"].to_pylist()
sc = np.array(sc)
lm = np.array(lm)
yaw = nose_offset(lm.reshape(-1, 5, 2))
side = mix.sides
x = mix.x.astype(np.float64)
# every friend's face against every friend's centre (its own person's without it)
fr = np.flatnonzero(mix.subject & np.isin(mix.dataset, ["lfw-many", "lfw-dev"]) & (mix.truth != ""))
people, inv = np.unique(mix.truth[fr], return_inverse=True)
S = np.zeros((len(people), x.shape[1]))
np.add.at(S, inv, x[fr])
right = np.zeros(len(fr), bool)
wrong = np.zeros(len(fr), bool)
for s in range(0, len(fr), 2000):
    b = fr[s : s + 2000]
    ib = inv[s : s + 2000]
    sims = x[b] @ S.T
    # leave-one-out own centre
    own = S[ib] - x[b]
    sims[np.arange(len(b)), ib] = (x[b] * own).sum(1) / np.linalg.norm(own, axis=1)
    norms = np.linalg.norm(S, axis=1)[None].repeat(len(b), 0)
    norms[np.arange(len(b)), ib] = 1
    sims = sims / norms
    j = sims.argmax(1)
    d = np.sqrt(np.maximum(0, 2 - 2 * sims.max(1)))
    right[s : s + 2000] = (j == ib) & (d <= cut)
    wrong[s : s + 2000] = (j != ib) & (d <= cut)
st = np.flatnonzero(
    ((mix.dataset == "lfw-strangers") & mix.subject) | np.array([t.startswith("stranger:") for t in mix.truth])
)
C = S / np.linalg.norm(S, axis=1, keepdims=True)
ds = np.sqrt(np.maximum(0, 2 - 2 * (x[st] @ C.T).max(1)))
snamed = ds <= cut


def table(name, vals, edges):
    print(name)
    for lo, hi in zip(edges[:-1], edges[1:]):
        f = (vals[fr] >= lo) & (vals[fr] < hi)
        s = (vals[st] >= lo) & (vals[st] < hi)
        print(
            f"  [{lo},{hi}) friends {f.sum():5d} right {right[f].mean() if f.any() else 0:.3f} wrong {wrong[f].sum():3d} | strangers/background {s.sum():5d} named {snamed[s].sum():3d}"
        )


table("side", side, [0, 20, 30, 40, 60, 1e9])
table("nose offset (pose)", yaw, [0, 0.25, 0.4, 0.6, 0.8, 10])
table("score", sc, [0, 0.9, 0.95, 0.99, 0.999, 1.01])
