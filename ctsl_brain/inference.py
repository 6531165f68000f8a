"""Using a trained model: arousal, dominance and valence of any recording.

A finished run becomes a model folder with ``python -m ctsl_brain export``
(see :mod:`ctsl_brain.export`); :class:`EmotionRegressor` loads it the way
SpeechBrain's pretrained models are loaded, and
``python -m ctsl_brain predict`` runs it over files and folders.
"""

import math
import os

import pandas as pd
import soundfile
import torch
from tqdm import tqdm

from speechbrain.inference.interfaces import Pretrained

from .dataio import (
    ATTRIBUTES,
    DataError,
    MissingInputError,
    SettingsError,
    describe_audio_problem,
    from_unit_scale,
    inspect_audio,
    load_audio,
)

__all__ = ["EmotionRegressor", "audio_files", "split_windows"]

BATCH_SIZE = 8  # windows per forward pass, unless told otherwise


def split_windows(signal, window):
    """Cuts a waveform into the fewest pieces of at most ``window`` samples.

    The pieces are of equal length (to a sample); a signal no longer than
    ``window`` is one piece, itself.

    Arguments
    ---------
    signal : torch.Tensor
        ``[samples]`` waveform.
    window : int
        Longest piece, in samples.

    Returns
    -------
    pieces : list of torch.Tensor
        Consecutive, non-overlapping views of ``signal``, covering it all.

    Example
    -------
    >>> [len(piece) for piece in split_windows(torch.zeros(25), 10)]
    [8, 8, 9]
    >>> [len(piece) for piece in split_windows(torch.zeros(7), 10)]
    [7]
    """
    count = max(1, math.ceil(len(signal) / window))
    bounds = [len(signal) * i // count for i in range(count + 1)]
    return [
        signal[start:end]
        for start, end in zip(bounds[:-1], bounds[1:], strict=True)
    ]


class EmotionRegressor(Pretrained):
    """Speech emotion regression with an exported model.

    Waveforms or files in, arousal, dominance and valence out, on the label
    scale of the training run (1-7 for MSP-Podcast).

    The numbers are what the run's own evaluation computes
    (``predictions.csv``): the head's outputs mapped back from [0, 1] to the
    label scale, not clipped to it. Everything runs in float32, on the device
    of ``run_opts`` (SpeechBrain's: ``{"device": "cuda:0"}``; by default a GPU
    when there is one).

    Files are read as in training: channels averaged, other sample rates
    resampled (torchaudio) to the model's. A file longer than
    ``window_seconds`` (a key of the model's ``hyperparams.yaml``, or an
    argument of the predict methods) is cut into the fewest non-overlapping
    windows of at most that length, all of the same length; each window is
    embedded on its own (waveform normalisation included) and the file's
    embedding is the mean of the windows' pooled embeddings weighted by their
    frame counts, that is, the mean over all frames of the windows; the head
    is applied to that. A file no longer than the window is one window: its
    prediction is exactly :meth:`predict_batch` of its waveform.

    A file is refused, as the training data preparation refuses it, when it
    is missing, not a file (a folder, a broken link), unreadable, cut short,
    empty, shorter than the model's ``min_duration``, silent (peak below
    :data:`ctsl_brain.dataio.SILENCE_PEAK`, also once its channels are
    averaged) or holds NaN or infinite samples: the same check
    (:func:`ctsl_brain.dataio.inspect_audio`), so a file the model was not
    trained on is not predicted either. A prediction that is not a finite
    number is refused too: a file gets numbers or an error, never NaN.

    It is usually built with :meth:`from_hparams`, which passes these
    arguments on.

    Arguments
    ---------
    modules : dict of torch.nn.Module
        ``encoder`` (an :class:`ctsl_brain.models.SSLEncoder`) and ``head``.
    hparams : dict
        The model's hyperparameters; :attr:`HPARAMS_NEEDED` are required.
    run_opts : dict or None
        SpeechBrain's run options, e.g. ``{"device": "cuda:0"}``.
    freeze_params : bool
        Keep the parameters from training (SpeechBrain's default, True).

    Example
    -------
    >>> model = EmotionRegressor.from_hparams(
    ...     source="models/teacher"
    ... )  # doctest: +SKIP
    >>> model.predict_file("call.wav")  # doctest: +SKIP
    arousal      4.12
    dominance    4.37
    valence      3.95
    Name: call.wav, dtype: float64
    >>> model.predict_files(
    ...     audio_files(["calls/"]), progress=True
    ... )  # doctest: +SKIP
    """

    MODULES_NEEDED = ["encoder", "head"]
    HPARAMS_NEEDED = [
        "sample_rate",
        "label_min",
        "label_max",
        "min_duration",
        "window_seconds",
    ]

    @classmethod
    def from_hparams(
        cls, source, hparams_file="hyperparams.yaml", overrides=None, **kwargs
    ):
        """Loads an exported model folder (``python -m ctsl_brain export``).

        Arguments
        ---------
        source : str
            The model folder.
        hparams_file : str
            Its hyperparameter file.
        overrides : dict or None
            Values replacing keys of that file, e.g.
            ``{"window_seconds": 5.0}``.
        **kwargs
            As for SpeechBrain's ``Pretrained.from_hparams``: ``savedir``,
            ``run_opts``, ...

        Returns
        -------
        model : EmotionRegressor
            The model, ready to predict.

        Raises
        ------
        ctsl_brain.dataio.MissingInputError
            ``source`` is not a folder, or holds no ``hparams_file``: the
            message says how to export one.
        """
        source = str(source)
        export = (
            f"python -m ctsl_brain export --run <output_folder> --out {source}"
        )
        if not os.path.isdir(source):
            raise MissingInputError(
                f"model folder {source} does not exist: give the folder an export wrote, or "
                f"export a trained run there first ({export})"
            )
        if not os.path.isfile(os.path.join(source, hparams_file)):
            raise MissingInputError(
                f"{source} is not a model folder (it has no {hparams_file}): give the folder an "
                f"export wrote, or export a trained run there first ({export})"
            )
        # The file does not know where it is; its encoder config is beside it.
        overrides = {
            "model_folder": os.path.abspath(source),
            **(overrides or {}),
        }
        return super().from_hparams(
            source, hparams_file, overrides=overrides, **kwargs
        )

    def load_audio(self, path):
        """Reads a file as the model hears it.

        Arguments
        ---------
        path : str
            An audio file that soundfile reads.

        Returns
        -------
        signal : torch.Tensor
            ``[samples]`` mono float32 waveform at the model's sample rate.

        Raises
        ------
        ctsl_brain.dataio.DataError
            The file cannot be used (see the class description): the message
            names it, says what is wrong and what to do, as the training data
            preparation would.
        """
        path = str(path)
        # Decoded twice, to check and to load, so that the verdict is exactly
        # training's.
        _, problem = inspect_audio(path, min_duration=self.hparams.min_duration)
        if problem is not None:
            raise DataError(describe_audio_problem(*problem))
        try:
            return load_audio(path, self.hparams.sample_rate)
        except (RuntimeError, OSError) as error:
            raise DataError(
                describe_audio_problem("unreadable audio", f"{path}: {error}")
            ) from error

    @torch.no_grad()
    def encode_batch(self, wavs, wav_lens=None):
        """Pooled embeddings of a batch of waveforms.

        Each waveform is taken whole, without windows.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) mono waveforms at the
            model's sample rate, zero-padded.
        wav_lens : torch.Tensor or None
            ``[batch]`` lengths relative to ``samples`` (SpeechBrain's
            convention); None: all 1.

        Returns
        -------
        embeddings : torch.Tensor
            ``[batch, embedding size]``, float32, on the model's device.
        """
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        wavs = wavs.to(self.device, torch.float32)
        return self.mods.encoder(wavs, wav_lens.to(self.device, torch.float32))

    @torch.no_grad()
    def predict_from_embeddings(self, embeddings):
        """Arousal, dominance and valence on the label scale, from embeddings.

        Arguments
        ---------
        embeddings : torch.Tensor
            ``[batch, embedding size]`` pooled embeddings, as from
            :meth:`encode_batch`.

        Returns
        -------
        predictions : torch.Tensor
            ``[batch, 3]``: arousal, dominance, valence on the label scale,
            on the model's device.
        """
        return from_unit_scale(
            self.mods.head(embeddings.to(self.device)),
            low=self.hparams.label_min,
            high=self.hparams.label_max,
        )

    def predict_batch(self, wavs, wav_lens=None):
        """Arousal, dominance and valence of a batch of waveforms.

        Each waveform is taken whole, without windows, as by
        :meth:`encode_batch`.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) mono waveforms at the
            model's sample rate, zero-padded.
        wav_lens : torch.Tensor or None
            ``[batch]`` lengths relative to ``samples``; None: all 1.

        Returns
        -------
        predictions : torch.Tensor
            ``[batch, 3]``: arousal, dominance, valence on the label scale,
            on the model's device.
        """
        return self.predict_from_embeddings(self.encode_batch(wavs, wav_lens))

    def forward(self, wavs, wav_lens=None):
        """Same as :meth:`predict_batch`.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[batch, samples]`` (or ``[samples]``) mono waveforms at the
            model's sample rate, zero-padded.
        wav_lens : torch.Tensor or None
            ``[batch]`` lengths relative to ``samples``; None: all 1.

        Returns
        -------
        predictions : torch.Tensor
            ``[batch, 3]``: arousal, dominance, valence on the label scale.
        """
        return self.predict_batch(wavs, wav_lens)

    def predict_file(self, path, *, window_seconds=None, batch_size=BATCH_SIZE):
        """Arousal, dominance and valence of one audio file.

        The file may have any sample rate, channel count and length.

        Arguments
        ---------
        path : str
            An audio file that soundfile reads (WAV, FLAC, OGG, MP3, ...).
        window_seconds : float or None
            Window length for long files; None: the model's
            ``window_seconds``.
        batch_size : int
            Windows per forward pass.

        Returns
        -------
        prediction : pandas.Series
            ``arousal``, ``dominance``, ``valence`` (also as attributes),
            named by ``path``.

        Raises
        ------
        ctsl_brain.dataio.DataError
            The file cannot be used (see :meth:`load_audio`), or the
            prediction is not a finite number.
        ctsl_brain.dataio.SettingsError
            ``window_seconds`` is shorter than twice the model's
            ``min_duration``.
        """
        signal = self.load_audio(path)
        ((_, embedding),) = self._embed_signals(
            [(path, signal)],
            batch_size=batch_size,
            window_seconds=window_seconds,
        )
        prediction = self.predict_from_embeddings(embedding.unsqueeze(0))[
            0
        ].tolist()
        problem = _prediction_problem(path, prediction)
        if problem is not None:
            raise DataError(problem)
        return pd.Series(prediction, index=list(ATTRIBUTES), name=str(path))

    def predict_files(
        self,
        paths,
        *,
        window_seconds=None,
        batch_size=BATCH_SIZE,
        progress=False,
    ):
        """Arousal, dominance and valence of many files.

        A file that cannot be used gets its error instead, and the others go
        on. Windows of consecutive files share batches. The predictions are
        those of :meth:`predict_file`, up to float rounding (a window padded
        in a batch gets the same pooled embedding as alone, to about 1e-6).

        Arguments
        ---------
        paths : list of str
            Audio files (:func:`audio_files` finds those of folders); a file
            named twice is predicted once.
        window_seconds : float or None
            Window length for long files; None: the model's
            ``window_seconds``.
        batch_size : int
            Windows per forward pass.
        progress : bool
            Show a progress bar (tqdm, on stderr).

        Returns
        -------
        predictions : pandas.DataFrame
            Indexed by file (as given), columns ``duration`` (seconds),
            ``arousal``, ``dominance``, ``valence`` and ``error`` (empty when
            the file was predicted; otherwise what is wrong and what to do,
            and the attributes are NaN, as is the duration of a file that
            could not be read).

        Raises
        ------
        ctsl_brain.dataio.SettingsError
            ``window_seconds`` is shorter than twice the model's
            ``min_duration``.
        """
        paths = list(dict.fromkeys(str(path) for path in paths))
        rows = {path: {"duration": math.nan, "error": ""} for path in paths}

        def readable():
            """Yields ``(path, waveform)`` of usable files, noting errors."""
            for path in tqdm(paths, disable=not progress, unit="file"):
                try:
                    signal = self.load_audio(path)
                except DataError as error:
                    rows[path]["error"] = str(error)
                    continue
                rows[path]["duration"] = len(signal) / self.hparams.sample_rate
                yield path, signal

        embedded = self._embed_signals(
            readable(), batch_size=batch_size, window_seconds=window_seconds
        )
        for path, embedding in embedded:
            prediction = self.predict_from_embeddings(embedding.unsqueeze(0))[
                0
            ].tolist()
            problem = _prediction_problem(path, prediction)
            if problem is None:
                rows[path].update(zip(ATTRIBUTES, prediction, strict=True))
            else:
                rows[path]["error"] = problem
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame = frame.reindex(columns=["duration", *ATTRIBUTES, "error"])
        frame.index.name = "file"
        return frame

    def _window_samples(self, window_seconds):
        seconds = (
            self.hparams.window_seconds
            if window_seconds is None
            else window_seconds
        )
        shortest = 2 * self.hparams.min_duration
        if not seconds >= shortest:
            raise SettingsError(
                f"window_seconds={seconds}: choose at least {shortest} s (windows of a long "
                f"file are at least half of it, and the model takes {self.hparams.min_duration}"
                " s or more)"
            )
        return round(seconds * self.hparams.sample_rate)

    def _embed_signals(self, signals, *, batch_size, window_seconds):
        """Embeds each ``(key, waveform)`` of an iterable.

        Windows of consecutive waveforms share batches; yields
        ``(key, embedding)`` in input order as each is complete.
        """
        window = self._window_samples(window_seconds)
        queue = []  # (key, window waveform) waiting for a batch
        parts = {}  # key -> [embeddings, frame counts, windows still queued]
        for key, signal in signals:
            pieces = split_windows(signal, window)
            parts[key] = [[], [], len(pieces)]
            queue.extend((key, piece) for piece in pieces)
            while len(queue) >= batch_size:
                yield from self._embed_queued(queue[:batch_size], parts)
                del queue[:batch_size]
        if queue:
            yield from self._embed_queued(queue, parts)

    def _embed_queued(self, batch, parts):
        keys, pieces = zip(*batch, strict=True)
        lengths = torch.tensor([len(piece) for piece in pieces])
        wavs = torch.nn.utils.rnn.pad_sequence(list(pieces), batch_first=True)
        embeddings = self.encode_batch(wavs, lengths / wavs.shape[1]).cpu()
        frames = self.mods.encoder.frame_lengths(lengths).cpu()
        for key, embedding, count in zip(keys, embeddings, frames, strict=True):
            found = parts[key]
            found[0].append(embedding)
            found[1].append(count)
            found[2] -= 1
            if found[2] == 0:
                del parts[key]
                weights = torch.stack(found[1]).to(embedding.dtype)
                weights = (
                    weights / weights.sum()
                )  # one window: exactly 1, its own embedding
                yield (
                    key,
                    (torch.stack(found[0]) * weights.unsqueeze(1)).sum(dim=0),
                )


def _prediction_problem(path, prediction):
    """The error of a prediction that is not a finite number, or None.

    A NaN must never pass for a result.
    """
    if all(math.isfinite(value) for value in prediction):
        return None
    values = ", ".join(
        f"{name} {value}"
        for name, value in zip(ATTRIBUTES, prediction, strict=True)
    )
    return (
        f"non-finite prediction: the model gives {values} for {path}; if other files get "
        "numbers, check that this one's samples lie between -1 and 1, otherwise export the "
        "model again from a run whose evaluation gave numbers"
    )


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
