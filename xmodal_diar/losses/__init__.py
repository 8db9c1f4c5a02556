"""Cross-modal losses, one module per source paper.

- :mod:`.le_odobez`: Le & Odobez 2017 (+ MTAP 2019): triplet baseline, TET, RDT, CST, MMD.
- :mod:`.wang`: Wang et al. SIGIR 2020: bi-directional ranking, shared identity and centre losses.
- :mod:`.vgsr`: Jin et al. AAAI 2023 (VGSR): margin knowledge distillation, quality-adaptive weights.
- :mod:`.nagrani`: Nagrani et al. ICASSP 2020: content / identity matching, confusion loss.
- :mod:`.moco`: Ding et al. 2020: MoCo speaker embedding pre-training.

Shared pieces: :mod:`.distances` (``d(a, b) = ||a - b||^2``), :mod:`.projection` (the map P).
"""
