"""VBx clustering of speaker-turn embeddings, initialised by agglomerative clustering.

Landini, Profant, Diez, Burget (2022), "Bayesian HMM clustering of x-vector sequences
(VBx) in speaker diarization", with pyannote's implementation
(:func:`pyannote.audio.utils.vbx.cluster_vbx`, the GMM variant without HMM transitions)
and PLDA (:class:`pyannote.audio.core.plda.PLDA`) reused as they are:

1. AHC initialisation: average-linkage clustering of the cosine distances
   ``d(i, j) = 1 - cos(s_i, s_j)`` (plus ``distance_offset``, and the face link
   constraints of :func:`~xmodal_diar.pipelines.face_evidence.constrain_distances`),
   cut at ``threshold``;
2. each embedding goes to the PLDA latent space ``x = plda(s)`` (within-speaker covariance
   ``I``, between-speaker covariance ``diag(phi)``); VB inference of the speaker
   posteriors ``q`` and priors ``pi`` starts from the AHC partition, with ``Fa`` scaling
   the likelihood and ``Fb`` the speaker regularisation; speakers whose prior falls to
   ``pi <= 1e-7`` are dropped and each turn goes to ``argmax_k q[i, k]``.

``distance_offset`` and the link constraints only shape the AHC initialisation: the VB step
sees the PLDA features alone and may move a turn away from a linked partner.

Unlike pyannote's :class:`~pyannote.audio.pipelines.clustering.VBxClustering`, whose
``threshold`` is a Euclidean centroid-linkage distance between unit vectors, ``threshold``
here is an average-linkage cosine distance, as in
:class:`~xmodal_diar.pipelines.turn_clustering.TurnClustering` (same call, same output).

The PLDA is a pair of ``.npz`` files, ``xvec_transform.npz`` (mean1, mean2, lda) and
``plda.npz`` (mu, tr, psi), made by ``recipes/SharedData/PLDA/train_plda.py``; the packaged
default (``xmodal_diar/pretrained/default/plda/``) models the bare pretrained CAM++ trunk's
embeddings: an encoder with a trained head on top needs its own PLDA (same recipe).
"""

from __future__ import annotations

import contextlib
import io

from pathlib import Path
from typing import Optional, Union

import numpy as np
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines.clustering import BaseClustering
from pyannote.audio.utils.vbx import cluster_vbx
from pyannote.pipeline.parameter import Uniform
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import cdist, squareform

from xmodal_diar.pipelines.face_evidence import constrain_distances
from xmodal_diar.pipelines.turn_clustering import relabel_by_first_appearance

#: PLDA of the embedded default model (CAM++ trunk).
DEFAULT_PLDA_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "default" / "plda"
#: the trunk (``train_plda.py --encoder``) whose embeddings the packaged PLDA models
DEFAULT_PLDA_TRUNK = "campplus"
PLDA_FILES = {"xvec_transform.npz": ("mean1", "mean2", "lda"), "plda.npz": ("mu", "tr", "psi")}
RECIPE = "recipes/SharedData/PLDA/train_plda.py"
#: tuned on held-out LibriSpeech train speakers (recipes/SharedData/PLDA/evaluate.py)
DEFAULT_PARAMETERS = {"threshold": 0.6, "Fa": 0.2, "Fb": 2.0}


def load_plda(directory: Union[str, Path], lda_dimension: int = 128) -> PLDA:
    """pyannote's :class:`PLDA` from ``directory/xvec_transform.npz`` and ``directory/plda.npz``.

    Raises FileNotFoundError naming a missing file, ValueError naming a file that is not
    an ``.npz`` archive with the expected arrays of consistent shapes.
    """
    directory = Path(directory)
    arrays = {}
    for name, keys in PLDA_FILES.items():
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f"{path}: PLDA file missing (make it with {RECIPE})")
        try:
            with np.load(path, allow_pickle=False) as archive:
                found = set(archive.files)
                arrays[name] = {k: archive[k] for k in keys if k in found}
        except (ValueError, OSError, AttributeError) as exc:
            raise ValueError(f"{path}: not a PLDA .npz archive ({exc})") from exc
        missing = set(keys) - set(arrays[name])
        if missing:
            raise ValueError(f"{path}: not a PLDA file of the expected kind, missing array(s) {sorted(missing)} "
                             f"(expected {list(keys)})")
    t, p = arrays["xvec_transform.npz"], arrays["plda.npz"]
    d = t["lda"].shape[1] if t["lda"].ndim == 2 else -1
    shapes_ok = (t["mean1"].shape == t["lda"].shape[:1] and t["mean2"].shape == (d,)
                 and p["mu"].shape == (d,) and p["tr"].shape == (d, d) and p["psi"].shape == (d,))
    if not shapes_ok:
        raise ValueError(f"{directory}: inconsistent PLDA shapes: mean1 {t['mean1'].shape}, lda {t['lda'].shape}, "
                         f"mean2 {t['mean2'].shape}, mu {p['mu'].shape}, tr {p['tr'].shape}, psi {p['psi'].shape}")
    if not (p["psi"] > 0).all():
        raise ValueError(f"{directory / 'plda.npz'}: psi must be positive (between-speaker variances)")
    return PLDA(directory / "xvec_transform.npz", directory / "plda.npz", lda_dimension=lda_dimension)


class VBxTurnClustering(BaseClustering):
    """VBx clustering of turn embeddings, initialised by (constrained) AHC.

    Parameters
    ----------
    plda : PLDA, folder of the two PLDA files, or None for the packaged default (CAM++).
    lda_dimension : PLDA dimensions kept (pyannote's default, 128).

    Hyper-parameters
    ----------------
    threshold : float in [0, 2]
        AHC stopping distance (average-linkage cosine distance) of the initialisation.
    Fa : float in [0.01, 0.5]
        Scale of the PLDA likelihoods (acoustic scaling).
    Fb : float in [0.01, 15]
        Speaker regularisation: larger values mean fewer speakers.
    """

    expects_num_clusters: bool = False

    def __init__(self, plda: Union[PLDA, str, Path, None] = None, lda_dimension: int = 128):
        super().__init__(metric="cosine")
        self.plda = plda if isinstance(plda, PLDA) else load_plda(plda or DEFAULT_PLDA_DIR, lda_dimension)
        self.threshold = Uniform(0.0, 2.0)
        self.Fa = Uniform(0.01, 0.5)
        self.Fb = Uniform(0.01, 15.0)

    def default_parameters(self) -> dict:
        return dict(DEFAULT_PARAMETERS)

    def vbx(self, embeddings: np.ndarray, init: np.ndarray) -> np.ndarray:
        """VBx from the partition ``init`` (any labels): surviving speaker of each embedding."""
        _, init = np.unique(init, return_inverse=True)
        try:
            features = self.plda(embeddings)
        except ValueError as exc:  # matmul shape mismatch
            raise ValueError(f"VBx clustering: embeddings of dimension {embeddings.shape[1]} do not fit this PLDA "
                             f"(trained for another trunk?): {exc}") from exc
        with contextlib.redirect_stdout(io.StringIO()):  # pyannote's VBx prints ELBO warnings
            q, pi = cluster_vbx(init, features, self.plda.phi, Fa=self.Fa, Fb=self.Fb, maxIters=20)
        return np.argmax(q[:, pi > 1e-7], axis=1)

    def __call__(
        self,
        embeddings: np.ndarray,
        must_link: Optional[np.ndarray] = None,
        cannot_link: Optional[np.ndarray] = None,
        num_clusters: Optional[int] = None,
        min_clusters: Optional[int] = None,
        max_clusters: Optional[int] = None,
        distance_offset: Optional[np.ndarray] = None,
    ) -> np.ndarray:
        """Cluster index of each of the ``(N, D)`` embeddings, numbered by first appearance.

        A forced count (``num_clusters``, or the bounds when VBx's own count falls outside
        them) re-initialises VBx from the AHC dendrogram cut into that many clusters; when
        VBx then drops a speaker, that AHC cut is returned.
        """
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2 or not np.isfinite(embeddings).all():
            raise ValueError(f"VBx clustering: expected finite (N, D) embeddings, got shape {embeddings.shape}")
        n = len(embeddings)
        if n == 0:
            return np.zeros(0, dtype=int)
        num_clusters, min_clusters, max_clusters = self.set_num_clusters(
            n, num_clusters=num_clusters, min_clusters=min_clusters, max_clusters=max_clusters
        )
        if n == 1 or max_clusters < 2:
            return np.zeros(n, dtype=int)
        distances = np.clip(cdist(embeddings, embeddings, metric="cosine"), 0.0, 2.0)
        if distance_offset is not None:
            distance_offset = np.asarray(distance_offset, dtype=np.float64)
            if distance_offset.shape != (n, n) or not np.isfinite(distance_offset).all():
                raise ValueError(f"distance_offset: expected a finite ({n}, {n}) array, got {distance_offset.shape}")
            distances = np.maximum(distances + distance_offset, 0.0)
        if must_link is not None or cannot_link is not None:
            none = np.zeros((n, n), dtype=bool)
            distances = constrain_distances(
                distances, none if must_link is None else must_link, none if cannot_link is None else cannot_link
            )
        np.fill_diagonal(distances, 0.0)
        dendrogram = linkage(squareform(distances, checks=False), method="average")
        if num_clusters is None:
            clusters = self.vbx(embeddings, fcluster(dendrogram, self.threshold, criterion="distance"))
            found = len(np.unique(clusters))
            if min_clusters <= found <= max_clusters:
                return relabel_by_first_appearance(clusters)
            num_clusters = min(max(found, min_clusters), max_clusters)
        init = fcluster(dendrogram, num_clusters, criterion="maxclust")
        clusters = self.vbx(embeddings, init)
        return relabel_by_first_appearance(clusters if len(np.unique(clusters)) == len(np.unique(init)) else init)
