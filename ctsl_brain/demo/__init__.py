"""The embedded demo corpus: synthetic emotional speech and radio-show noise.

- :mod:`.corpus`: :func:`~.corpus.prepare_demo_corpus`, the corpus on disk
  (manifests, noise banks, field recordings).
- :mod:`.speech`: the emotional-speech synthesiser driven by the labels.
- :mod:`.radio_noise`: babble, music and sound effects as radio shows.
"""
