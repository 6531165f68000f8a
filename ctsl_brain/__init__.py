"""Noise-robust speech emotion recognition by contrastive teacher-student learning.

The library behind the SpeechBrain recipe (``train.py``, ``msp_podcast_prepare.py``,
``hparams/``), from the top down:

- :mod:`ctsl_brain.analysis`: the paper's study as tables, significance tests and a figure.
- :mod:`ctsl_brain.export`, :mod:`ctsl_brain.card`, :mod:`ctsl_brain.inference`: a finished
  run as a self-contained model folder (ONNX too) with its model card, and that model on any
  recording (``python -m ctsl_brain predict``).
- :mod:`ctsl_brain.report`: test results as tables.
- :mod:`ctsl_brain.settings`: a run's YAML and overrides, checked before anything runs.
- :mod:`ctsl_brain.evaluation`: what a finished run writes for the study.
- :mod:`ctsl_brain.checkpoints`: checkpoints that a killed run cannot leave half-written.
- :mod:`ctsl_brain.losses`: CCC, the transfer loss (RMSE) and InfoNCE, as pure tensor functions.
- :mod:`ctsl_brain.models`: the SSL encoder with pruning and masked mean pooling, the head.
- :mod:`ctsl_brain.statistics`: checkpoint selection, test groups and Welch's t-tests.
- :mod:`ctsl_brain.conditions`: the noisy test and dev conditions, written once to disk.
- :mod:`ctsl_brain.noise`: mixing speech with recorded noise at an SNR over each utterance.
- :mod:`ctsl_brain.noise_prep`: the noise banks from a folder of recordings.
- :mod:`ctsl_brain.field_prep`: noise from field recordings, their stretches without speech.
- :mod:`ctsl_brain.demo_corpus`, :mod:`ctsl_brain.demo_speech`, :mod:`ctsl_brain.demo_noise`:
  the embedded synthetic demo corpus, its speech and its radio-show noise.
- :mod:`ctsl_brain.dataio`: the ground floor: error types, audio reading and checking, labels,
  manifests, atomic file writing.
- :mod:`ctsl_brain.custom_interface`: below it, the code an exported model carries
  (``EmotionRegressor``, the encoder and head, audio reading and checks); it imports nothing
  of the project.
"""

__version__ = "0.1.0"
