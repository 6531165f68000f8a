"""Noise banks: the adaptation and held-out test noise, from recordings.

- :mod:`.banks`: :func:`~.banks.prepare_noise_banks`, the two banks from a folder
  of noise recordings.
- :mod:`.field`: :func:`~.field.extract_field_noise`, noise taken from field
  recordings with people talking in them (silero-vad).
- :mod:`.reading`: which files, what each holds, and their audio, block by block.
- :mod:`.plan`: which samples of which recording go into which segment.
- :mod:`.writing`: the segments, written in a second pass over the recordings.
- :mod:`.summary`: a preparation's report, warnings and refusals.
- :mod:`.output_folder`: what both preparations share: folder checks, the
  stamp, the scan of the inputs, the log and the result.
"""
