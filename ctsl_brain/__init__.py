"""Noise-robust speech emotion recognition by contrastive teacher-student learning.

The library behind the SpeechBrain recipe (``train.py``, ``hparams/``):

- :mod:`ctsl_brain.losses`: CCC, the transfer loss and InfoNCE.
- :mod:`ctsl_brain.models`: the pruned SSL encoder, mean pooling and the head.
- :mod:`ctsl_brain.noise`, :mod:`ctsl_brain.conditions`: mixing at an SNR, and
  the noisy test and dev conditions.
- :mod:`ctsl_brain.settings`, :mod:`ctsl_brain.checkpoints`,
  :mod:`ctsl_brain.evaluation`: a run's settings, checkpoints and outputs.
- :mod:`ctsl_brain.statistics`, :mod:`ctsl_brain.analysis`,
  :mod:`ctsl_brain.report`: checkpoint selection, significance tests and tables.
- :mod:`ctsl_brain.dataio`: errors, audio, labels, manifests, atomic writes.
- :mod:`ctsl_brain.custom_interface`: the code an exported model carries.
- Subpackages: :mod:`ctsl_brain.noise_banks`, :mod:`ctsl_brain.demo`,
  :mod:`ctsl_brain.deployment`, each with its own map.
"""

__version__ = "0.1.0"
