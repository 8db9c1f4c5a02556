"""Ecosystem adapters: everything that speaks pyannote.audio or SpeechBrain file formats.

- :mod:`.pyannote`: :class:`TurnEmbeddingModel` (a ``pyannote.audio.Model``) and its
  Lightning-style checkpoint (``pytorch_model.bin``).
- :mod:`.speechbrain`: ``hyperparams.yaml`` + ``embedding_model.ckpt`` for
  ``EncoderClassifier.from_hparams``, and the whole model directory export.
"""
