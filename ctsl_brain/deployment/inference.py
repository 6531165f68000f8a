"""Using a trained model: :class:`EmotionRegressor` (from
:mod:`ctsl_brain.custom_interface`), and what ``python -m ctsl_brain predict`` adds to it:
finding the audio files of folders and drawing a file's trajectory.
"""

import io
import os

import soundfile

from ..custom_interface import (
    BATCH_SIZE,
    EmotionRegressor,
    hop_windows,
    split_windows,
)
from ..dataio import ATTRIBUTES, MissingInputError, write_bytes_atomic

__all__ = [
    "BATCH_SIZE",
    "EmotionRegressor",
    "audio_files",
    "hop_windows",
    "plot_trajectory",
    "split_windows",
]


def audio_files(paths, *, extensions=None):
    """The files to predict, from files and folders.

    Each path that is a file, and the audio files found (recursively, sorted)
    in each path that is a folder, each once. A folder is searched whatever
    its name (``take1.wav/`` too). A path that is neither is kept, to be
    reported as missing (or as a broken link) when it is read.

    Arguments
    ---------
    paths : list of str
        Files and folders.
    extensions : tuple of str or None
        File name endings searched for in folders; None: those of the formats
        soundfile reads among ``.wav``, ``.flac``, ``.ogg``, ``.opus`` and
        ``.mp3``.

    Returns
    -------
    files : list of str
        The files, in the order given, those of a folder sorted.

    Raises
    ------
    ctsl_brain.dataio.MissingInputError
        A folder in ``paths`` holds no audio file: naming it was a mistake,
        better said at once than passed over in silence.

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> for name in ("b.wav", "a.wav", "notes.txt"):
    ...     _ = (folder / name).write_bytes(b"")
    >>> [os.path.basename(f) for f in audio_files([folder, "c.wav"])]
    ['a.wav', 'b.wav', 'c.wav']
    """
    if extensions is None:
        formats = soundfile.available_formats()
        wanted = {
            ".wav": "WAV",
            ".flac": "FLAC",
            ".ogg": "OGG",
            ".opus": "OGG",
            ".mp3": "MP3",
        }
        extensions = tuple(
            ending for ending, name in wanted.items() if name in formats
        )
    found = []
    for path in paths:
        path = str(path)
        if not os.path.isdir(path):
            found.append(path)
            continue
        inside = []
        for folder, _, names in os.walk(path):
            inside += [
                os.path.join(folder, name)
                for name in names
                if name.lower().endswith(extensions)
            ]
        if not inside:
            raise MissingInputError(
                f"{path} is a folder and holds no audio file (searched for "
                f"{', '.join(extensions)}): name audio files, or folders that hold some"
            )
        found += sorted(inside)
    return list(dict.fromkeys(found))


def plot_trajectory(rows, path, *, title):
    """Draws a file's windowed predictions against time, as a PNG.

    One line per attribute, at the middle of each window.

    Arguments
    ---------
    rows : list of dict
        ``start``, ``end``, ``arousal``, ``dominance``, ``valence`` of each
        window, as :meth:`EmotionRegressor.predict_trajectory` gives them.
    path : str
        The PNG to write (atomically).
    title : str
        The figure's title (the audio file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    middles = [(row["start"] + row["end"]) / 2 for row in rows]
    figure, axes = plt.subplots(figsize=(8, 3.2))
    for name in ATTRIBUTES:
        axes.plot(middles, [row[name] for row in rows], label=name, marker=".")
    axes.set_xlabel("time (s), middle of each window")
    axes.set_ylabel("prediction")
    axes.set_title(title, fontsize=9)
    axes.legend(loc="best", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_bytes_atomic(path, buffer.getvalue())
