"""A trained model outside the recipe: export, model card and inference.

- :mod:`.export`: :func:`~.export.export_run`, a finished run as a model folder
  (ONNX too).
- :mod:`.card`: the model card (``README.md``) of that folder.
- :mod:`.inference`: the model on files and folders, the command line's part.
- :mod:`.serve`: a web page to try the model (gradio).

The folder carries :mod:`ctsl_brain.custom_interface`, which loads with
SpeechBrain's ``foreign_class``.
"""
