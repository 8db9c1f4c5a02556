"""VBx clustering of speaker-turn embeddings, initialised by agglomerative clustering.

Landini, Profant, Diez, Burget (2022), "Bayesian HMM clustering of x-vector sequences
(VBx) in speaker diarization", with pyannote's implementation
(:func:`pyannote.audio.utils.vbx.cluster_vbx`, the GMM variant without HMM transitions)
and PLDA (:class:`pyannote.audio.core.plda.PLDA`) reused as they are.

:class:`VBxClustering` is a :class:`~xmodal_diar.pipelines.turn_clustering.TurnClustering`
(same call, same ``(clusters, centroids)`` output, same handling of ``distance_offset``,
short turns, small clusters, centroids and numbering) whose clustering step of the turns
long enough to be clustered is:

1. AHC initialisation: average-linkage clustering of the distances
   ``d(i, j) = 1 - cos(s_i, s_j)`` plus the face-evidence ``distance_offset``, clipped to
   ``[0, 2]``, cut at ``threshold``;
2. each embedding goes to the PLDA latent space ``x = plda(s)`` (within-speaker covariance
   ``I``, between-speaker covariance ``diag(phi)``); VB inference of the speaker
   posteriors ``q`` and priors ``pi`` starts from the AHC partition, with ``Fa`` scaling
   the likelihood and ``Fb`` the speaker regularisation; speakers whose prior falls to
   ``pi <= 1e-7`` are dropped and each turn goes to ``argmax_k q[i, k]``.

``distance_offset`` only shapes the AHC initialisation (and the assignment of the short
turns to centroids): the VB step sees the PLDA features alone and may move a turn away
from a partner that the face evidence put next to it.

Unlike pyannote's :class:`~pyannote.audio.pipelines.clustering.VBxClustering`, whose
``threshold`` is a Euclidean centroid-linkage distance between unit vectors, ``threshold``
here is an average-linkage cosine distance, as in ``TurnClustering``.

The PLDA is a pair of ``.npz`` files, ``xvec_transform.npz`` (mean1, mean2, lda) and
``plda.npz`` (mu, tr, psi), made by ``recipes/SharedData/PLDA/train_plda.py``; the packaged
default (``xmodal_diar/pretrained/default/plda/``) models the bare pretrained CAM++ trunk's
embeddings: an encoder with a trained head on top needs its own PLDA (same recipe).
"""

from __future__ import annotations

import contextlib
import io

from pathlib import Path
from typing import Union

import numpy as np
from pyannote.audio.core.plda import PLDA
from pyannote.audio.pipelines.clustering import BaseClustering
from pyannote.audio.utils.vbx import cluster_vbx
from pyannote.pipeline.parameter import Uniform
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from xmodal_diar.pipelines.turn_clustering import COMMON_PARAMETERS, TurnClustering

#: PLDA of the embedded default model (CAM++ trunk).
DEFAULT_PLDA_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "default" / "plda"
#: the trunk (``train_plda.py --encoder``) whose embeddings the packaged PLDA models
DEFAULT_PLDA_TRUNK = "campplus"
PLDA_FILES = {"xvec_transform.npz": ("mean1", "mean2", "lda"), "plda.npz": ("mu", "tr", "psi")}
RECIPE = "recipes/SharedData/PLDA/train_plda.py"
#: threshold, Fa, Fb tuned on held-out LibriSpeech train speakers (recipes/SharedData/PLDA/evaluate.py);
#: min_turn_duration, min_cluster_duration as TurnClustering's (1.0, 3.0): with 0.0, 0.0 the
#: pipeline finds a 1.0 s ghost third speaker in pyannote's 2-speaker sample.wav (DER 13.6 %
#: vs 9.6 % with 1.0, 3.0; tests/test_vbx_clustering.py)
DEFAULT_PARAMETERS = {"threshold": 0.6, "Fa": 0.2, "Fb": 2.0, **COMMON_PARAMETERS}


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


class VBxClustering(TurnClustering):
    """VBx clustering of turn embeddings, initialised by AHC (see module docstring).

    Called as :class:`~xmodal_diar.pipelines.turn_clustering.TurnClustering`:
    ``clusters, centroids = clustering(embeddings, durations=..., distance_offset=...,
    num_clusters=..., min_clusters=..., max_clusters=...)``.

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
    min_turn_duration, min_cluster_duration, short_turns, refine : as ``TurnClustering``
    """

    expects_num_clusters: bool = False

    def __init__(self, plda: Union[PLDA, str, Path, None] = None, lda_dimension: int = 128):
        BaseClustering.__init__(self, metric="cosine")  # not TurnClustering's method check
        self.method = "vbx"
        self.plda = plda if isinstance(plda, PLDA) else load_plda(plda or DEFAULT_PLDA_DIR, lda_dimension)
        self.threshold = Uniform(0.0, 2.0)
        self.Fa = Uniform(0.01, 0.5)
        self.Fb = Uniform(0.01, 15.0)
        self._common_hyper_parameters()

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

    def _cluster(
        self, distances: np.ndarray, num_clusters, min_clusters: int, max_clusters: int, embeddings: np.ndarray
    ) -> np.ndarray:
        """Cluster index (from 0) of each turn: AHC on ``distances``, then VBx on ``embeddings``.

        A forced count (``num_clusters``, or the bounds when VBx's own count falls outside
        them) re-initialises VBx from the AHC dendrogram cut into that many clusters; when
        VBx then drops a speaker, that AHC cut is returned.
        """
        n = len(distances)
        if n == 1 or max_clusters < 2:
            return np.zeros(n, dtype=int)
        dendrogram = linkage(squareform(distances, checks=False), method="average")
        if num_clusters is None:
            clusters = self.vbx(embeddings, fcluster(dendrogram, self.threshold, criterion="distance"))
            found = len(np.unique(clusters))
            if min_clusters <= found <= max_clusters:
                return np.unique(clusters, return_inverse=True)[1]
            num_clusters = min(max(found, min_clusters), max_clusters)
        init = fcluster(dendrogram, num_clusters, criterion="maxclust")
        clusters = self.vbx(embeddings, init)
        if len(np.unique(clusters)) != len(np.unique(init)):
            clusters = init
        return np.unique(clusters, return_inverse=True)[1]
