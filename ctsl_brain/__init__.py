"""Noise-robust speech emotion recognition by contrastive teacher-student learning.

The library behind the SpeechBrain recipe (``train.py``, ``hparams/``):

- :mod:`ctsl_brain.losses`: CCC, the transfer loss (RMSE) and InfoNCE, as pure tensor functions.
- :mod:`ctsl_brain.models`: the SSL encoder with pruning and masked mean pooling, the head.
- :mod:`ctsl_brain.noise`: mixing speech with recorded noise at an SNR over each utterance.
- :mod:`ctsl_brain.data`: manifests, datasets and corpus preparation.
- :mod:`ctsl_brain.brain`: the Brain of the teacher and student stages.
- :mod:`ctsl_brain.demo_corpus`: the embedded synthetic demo corpus, its files and manifests;
  :mod:`ctsl_brain.demo_speech` synthesises its emotional speech, :mod:`ctsl_brain.demo_noise`
  its radio-show noise.
- :mod:`ctsl_brain.report`: test results as tables.
- :mod:`ctsl_brain.export`: a finished run as a self-contained model folder.
- :mod:`ctsl_brain.inference`: that model on any recording (``python -m ctsl_brain predict``).
"""

__version__ = "0.1.0"
