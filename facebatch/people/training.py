"""Learning an adapter from labelled embeddings: the model, batches per person, the miner, the
losses and the loop. Torch and numpy on stored embeddings only (no photo, no library):
people.adapter builds the `TrainingSet` from the library's labels and stores what `fit` returns.

What is known about two faces, and so what can be learned:
- same person: both named alike (face by face or by cluster);
- different people: named differently; a face "not Alice" against Alice; a face that shares a
  photo with one of Alice's faces against Alice (two faces of one photo are two people); a
  background face (unnamed and far from every named person, see people.adapter) against every
  named person, so that strangers are not pulled in.

Losses (benchmarks/train_adapter.py compares them; BENCHMARKS.md has the table):
- `triplet` (the default; FaceNet, Schroff et al. 2015): batches of P people x K faces plus
  negative-only faces; every anchor-positive pair takes one negative mined online in the batch,
  `semi-hard` (the nearest negative farther from the anchor than the positive, else the farthest
  negative) or `hard` (the nearest negative), and pays max(0, d(a, p) - d(a, n) + margin) on the
  Euclidean distance of unit vectors, the scale of the library's model (models.scale).
- `am-softmax` (additive-margin softmax, Wang et al. 2018): the named people are classes, cosine
  logits s * (cos - m) for the true class, class weights starting at the people's plain centres.
  It learns from names only: "not" labels and negative-only faces have no class.

Both add a calibration term: the cross-entropy of the model's fixed confidence (models.scale) for the
batch's own answers (a face against its person's centre: right; against the nearest centre of a
person it is known not to be: wrong). A triplet loss alone only orders distances: on the
development mix it tightened every distance, named or not, and the fixed cut then named strangers.

Two things keep the people nobody named where they were. AdamW's weight decay pulls the residual
map towards zero (the identity), and the gate (`ResidualAdapter`) lets the adapter move only the
faces near a named person's centre: moving every face, it blurred the unnamed people's clusters
(pairwise F of their new photos 0.976 -> 0.965 on the mix's tune half; 0.975 with the gate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from facebatch.models.catalog import FACENET_SCALE
from facebatch.models.scale import DistanceScale

LOSSES = ("triplet", "am-softmax")
MINING = ("semi-hard", "hard")


@dataclass(frozen=True)
class TrainingSettings:
    loss: str = "triplet"
    mining: str = "semi-hard"
    # triplet: on the Euclidean distance of unit vectors; tuned on FaceNet (cut 0.838), not re-tuned
    # for other models (SFace's cut is 1.023): the check refuses an adapter that does worse anyway.
    margin: float = 0.25
    hidden: int = 0  # 0: a residual linear map; > 0: a residual two-layer MLP this wide
    steps: int = 400
    people_per_batch: int = 16
    faces_per_person: int = 8
    negatives_per_batch: int = 64  # negative-only faces added to each batch
    learning_rate: float = 1e-3
    weight_decay: float = 10.0  # AdamW's, on the residual weights: a pull towards the identity map
    calibrate: float = 1.0  # weight of the calibration term
    # 0: move every face; else only faces near a named person (see ResidualAdapter). None: the
    # scale's member distance.
    gate_distance: float | None = None
    scale: DistanceScale = FACENET_SCALE  # the library model's: its confidence is what the calibration term aims at
    am_scale: float = 30.0
    am_margin: float = 0.35
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.mining not in MINING:
            raise ValueError(f"mining must be one of {', '.join(MINING)}, got {self.mining!r}")
        if self.steps < 1 or self.people_per_batch < 2 or self.faces_per_person < 2:
            raise ValueError("steps >= 1, people_per_batch >= 2 and faces_per_person >= 2")


@dataclass
class TrainingSet:
    """Faces and what is known about them. Rows with `person >= 0` are named; the others are
    negative-only: `nots` says which people they are not, `background` marks rows that are no
    named person at all."""

    x: np.ndarray  # (n, d) unit vectors
    person: np.ndarray  # (n,) person index, -1: negative-only
    nots: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # (row, person) pairs
    background: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (n,) or empty: none

    def __post_init__(self) -> None:
        self.person = np.asarray(self.person, np.int64)
        self.nots = np.asarray(self.nots, np.int64).reshape(-1, 2)
        if len(self.background) != len(self.x):
            self.background = np.zeros(len(self.x), bool)

    @property
    def people(self) -> int:
        return int(self.person.max()) + 1 if len(self.person) else 0

    def trainable(self) -> bool:
        """At least two people with two faces each: something to pull together and push apart."""
        counts = np.bincount(self.person[self.person >= 0], minlength=self.people)
        return int((counts >= 2).sum()) >= 2


# --------------------------------------------------------------------------- the model

# The gate: 1/2 at its distance from the nearest named person's centre, 0.98 four widths inside
# and 0.02 four widths beyond.
GATE_WIDTH = 0.05


class ResidualAdapter(nn.Module):
    """x -> normalise(x + g(x) h(x)): h linear (or a two-layer MLP) whose last layer starts at
    zero, so training begins from the plain embeddings; g a gate that is 1 near the named people
    and 0 far from them (GATE_WIDTH), so faces of people nobody named keep their plain place.

    people.adapter applies the stored weights with numpy (`apply_weights`): the same function."""

    def __init__(self, dim: int, hidden: int = 0, centres: np.ndarray | None = None, gate_distance: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim)] if hidden > 0 else [
            nn.Linear(dim, dim)]
        self.residual = nn.Sequential(*layers)
        nn.init.zeros_(self.residual[-1].weight)
        nn.init.zeros_(self.residual[-1].bias)
        # Stored with the weights (a state dict entry each), so the numpy forward pass sees them.
        self.register_buffer("centres", torch.as_tensor(np.zeros((0, dim)) if centres is None else centres,
                                                         dtype=torch.float32))
        self.register_buffer("gate_distance", torch.tensor(float(gate_distance)))
        self.register_buffer("gate_width", torch.tensor(GATE_WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        step = self.residual(x)
        if len(self.centres) and float(self.gate_distance) > 0:
            nearest_centre = unit_distance(x, self.centres).min(dim=1).values
            step = step * torch.sigmoid((self.gate_distance - nearest_centre) / self.gate_width)[:, None]
        return F.normalize(x + step, dim=1)


# --------------------------------------------------------------------------- batches and mining


def sample_batch(data: TrainingSet, settings: TrainingSettings, rng: np.random.Generator) -> np.ndarray:
    """Rows of one batch: P people with at least two faces, K faces each (all when fewer), then
    negative-only faces: those known not to be one of the P, and background faces."""
    counts = np.bincount(data.person[data.person >= 0], minlength=data.people)
    eligible = np.flatnonzero(counts >= 2)
    chosen = rng.choice(eligible, min(settings.people_per_batch, len(eligible)), replace=False)
    rows = []
    for p in chosen.tolist():
        own = np.flatnonzero(data.person == p)
        rows.append(rng.choice(own, min(settings.faces_per_person, len(own)), replace=False))
    about_chosen = data.nots[np.isin(data.nots[:, 1], chosen), 0]
    candidates = np.union1d(about_chosen, np.flatnonzero(data.background))
    if len(candidates):
        rows.append(rng.choice(candidates, min(settings.negatives_per_batch, len(candidates)), replace=False))
    return np.concatenate(rows).astype(np.int64)


def negative_mask(data: TrainingSet, rows: np.ndarray) -> np.ndarray:
    """(b, b) bool: [i, j] when face j is known not to be face i's person (i named)."""
    person = data.person[rows]
    named = person >= 0
    mask = named[:, None] & named[None, :] & (person[:, None] != person[None, :])
    mask |= named[:, None] & data.background[rows][None, :]
    in_batch = np.isin(data.nots[:, 0], rows)
    if in_batch.any():
        position = {int(r): k for k, r in enumerate(rows.tolist())}
        for row, p in data.nots[in_batch].tolist():
            mask[:, position[row]] |= person == p
    return mask


def positive_mask(person: np.ndarray) -> np.ndarray:
    """(b, b) bool: [i, j] for two different faces of one named person."""
    same = (person[:, None] == person[None, :]) & (person[:, None] >= 0)
    np.fill_diagonal(same, False)
    return same


def mine_negatives(distance: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                   mining: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(anchors, positives, negatives) indices: every (anchor, positive) pair that has a negative,
    with the negative mined for it.

    `semi-hard`: the nearest negative farther from the anchor than the positive, else (all
    negatives are nearer than the positive) the farthest one; `hard`: the nearest negative.
    """
    anchors, positives = torch.nonzero(positive, as_tuple=True)
    keep = negative[anchors].any(dim=1)
    anchors, positives = anchors[keep], positives[keep]
    rows, allowed = distance[anchors], negative[anchors]
    inf = torch.full_like(rows, float("inf"))
    if mining == "hard":
        return anchors, positives, torch.where(allowed, rows, inf).argmin(dim=1)
    farther = allowed & (rows > distance[anchors, positives][:, None])
    nearest_farther = torch.where(farther, rows, inf).argmin(dim=1)
    farthest = torch.where(allowed, rows, -inf).argmax(dim=1)
    return anchors, positives, torch.where(farther.any(dim=1), nearest_farther, farthest)


def unit_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of two sets of unit vectors (clamped away from 0,
    where sqrt has no gradient)."""
    return torch.sqrt(torch.clamp(2.0 - 2.0 * (a @ b.T), min=1e-9))


def triplet_loss(y: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float,
                 mining: str) -> torch.Tensor:
    """Mean of max(0, d(a, p) - d(a, n) + margin) over the mined triplets (0 when there are none)."""
    distance = unit_distance(y, y)
    a, p, n = mine_negatives(distance.detach(), positive, negative, mining)
    if len(a) == 0:
        return y.sum() * 0.0
    return F.relu(distance[a, p] - distance[a, n] + margin).mean()


def am_softmax_loss(y: torch.Tensor, person: torch.Tensor, weights: torch.Tensor, scale: float,
                    margin: float) -> torch.Tensor:
    """Additive-margin softmax over the named rows of the batch (0 when there are none)."""
    named = person >= 0
    if not named.any():
        return y.sum() * 0.0
    cosine = y[named] @ F.normalize(weights, dim=1).T
    target = F.one_hot(person[named], weights.shape[0]).to(cosine.dtype)
    return F.cross_entropy(scale * (cosine - margin * target), person[named])


def calibration_loss(y: torch.Tensor, person: torch.Tensor, negative: torch.Tensor,
                     scale: DistanceScale = FACENET_SCALE) -> torch.Tensor:
    """Cross-entropy of the model's confidence for the batch's answers: each named face
    against the centre of its person's other faces in the batch (right), each face against the
    nearest centre of a person it is known not to be (wrong)."""
    people = torch.unique(person[person >= 0])
    member = (person[None, :] == people[:, None]).to(y.dtype)  # (people, b)
    sums = member @ y
    named = torch.nonzero(person >= 0).flatten()
    own = torch.searchsorted(people, person[named])
    alone = member.sum(dim=1)[own] < 2
    named, own = named[~alone], own[~alone]
    d_own = unit_distance(y[named], F.normalize(sums[own] - y[named], dim=1)).diagonal()
    not_person = (negative.to(y.dtype).T @ member.T) > 0  # (b, people): j is known not that person
    d_all = unit_distance(y, F.normalize(sums, dim=1))
    d_wrong = torch.where(not_person, d_all, torch.full_like(d_all, 9.0)).min(dim=1).values[not_person.any(dim=1)]
    loss = y.sum() * 0.0
    if len(d_own):
        loss = loss + F.binary_cross_entropy_with_logits(-scale.slope * (d_own - scale.midpoint), torch.ones_like(d_own))
    if len(d_wrong):
        loss = loss + F.binary_cross_entropy_with_logits(-scale.slope * (d_wrong - scale.midpoint), torch.zeros_like(d_wrong))
    return loss


# --------------------------------------------------------------------------- the loop


@dataclass
class Fitted:
    model: ResidualAdapter
    settings: TrainingSettings
    losses: list[float]  # mean loss over each tenth of the steps

    def weights(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.model.state_dict().items()}

    def transform(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.tensor(np.asarray(x, np.float32))).numpy()


def fit(data: TrainingSet, settings: TrainingSettings) -> Fitted:
    """Train an adapter on `data` (`data.trainable()` must hold). Deterministic for a seed."""
    if not data.trainable():
        raise ValueError("training needs at least two people with two faces each")
    threads = torch.get_num_threads()
    # A batch is ~200 x 512: one thread does it in ~15 ms a step here, two threads on a shared
    # 2-core machine took up to 100 ms (synchronisation costs more than the arithmetic).
    torch.set_num_threads(1)
    try:
        return _fit(data, settings)
    finally:
        torch.set_num_threads(threads)


def _fit(data: TrainingSet, settings: TrainingSettings) -> Fitted:
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    gate = settings.scale.member_distance if settings.gate_distance is None else settings.gate_distance
    model = ResidualAdapter(data.x.shape[1], settings.hidden, person_centres(data), gate)
    groups = [{"params": list(model.parameters()), "weight_decay": settings.weight_decay}]
    class_weights = None
    if settings.loss == "am-softmax":
        class_weights = nn.Parameter(torch.as_tensor(person_centres(data), dtype=torch.float32))
        groups.append({"params": [class_weights], "weight_decay": 0.0})
    optimiser = torch.optim.AdamW(groups, lr=settings.learning_rate)
    x = torch.tensor(np.asarray(data.x, np.float32))
    trace: list[float] = []
    window: list[float] = []
    for _ in range(settings.steps):
        rows = sample_batch(data, settings, rng)
        person = torch.as_tensor(data.person[rows])
        negative = torch.as_tensor(negative_mask(data, rows))
        y = model(x[rows])
        if class_weights is not None:
            loss = am_softmax_loss(y, person, class_weights, settings.am_scale, settings.am_margin)
        else:
            positive = torch.as_tensor(positive_mask(data.person[rows]))
            loss = triplet_loss(y, positive, negative, settings.margin, settings.mining)
        if settings.calibrate > 0:
            loss = loss + settings.calibrate * calibration_loss(y, person, negative, settings.scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        window.append(float(loss.detach()))
        if len(window) * 10 >= settings.steps:
            trace.append(float(np.mean(window)))
            window = []
    if window:
        trace.append(float(np.mean(window)))
    model.eval()
    return Fitted(model, settings, trace)


def person_centres(data: TrainingSet) -> np.ndarray:
    """(people, d) normalised mean of each person's faces."""
    sums = np.zeros((data.people, data.x.shape[1]), np.float64)
    named = data.person >= 0
    np.add.at(sums, data.person[named], data.x[named])
    return sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
