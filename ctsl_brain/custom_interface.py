"""Arousal, dominance and valence of any recording, with an exported model.

The whole code of an exported model: ``python -m ctsl_brain export`` copies
this file into every model folder, which then loads where this project is not
installed, as SpeechBrain's hub models with custom code do::

    from speechbrain.inference.interfaces import foreign_class

    model = foreign_class(
        source="<model folder or hub id>",
        pymodule_file="custom_interface.py",
        classname="EmotionRegressor",
    )
    model.predict_file("speech.wav")

It imports nothing of the project; the recipe trains, evaluates and reads
audio with the same code.
"""

import contextlib
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import types
import warnings

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from speechbrain.inference.interfaces import Pretrained

__all__ = [
    "ATTRIBUTES",
    "UserError",
    "SettingsError",
    "MissingInputError",
    "DataError",
    "SILENCE_PEAK",
    "AUDIO_ADVICE",
    "describe_audio_problem",
    "SampleCheck",
    "inspect_audio",
    "load_audio",
    "resampled_length",
    "resampling_reach",
    "read_segment",
    "from_unit_scale",
    "cpu_has_bf16",
    "usable_precision",
    "masked_mean",
    "normalize_waveforms",
    "SSLEncoder",
    "RegressionHead",
    "EmotionGraph",
    "split_windows",
    "window_bounds",
    "hop_windows",
    "EmotionRegressor",
]

ATTRIBUTES = ("arousal", "dominance", "valence")
BATCH_SIZE = 8  # windows per forward pass, unless told otherwise
PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_TYPES = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
# The CPU features that compute in bfloat16, as /proc/cpuinfo names them (x86, Arm).
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_has_bf16():
    """Whether this CPU computes in bfloat16 natively.

    That is AVX512-BF16 or AMX on x86, as PyTorch reports them, or the BF16
    extension on Arm, from ``/proc/cpuinfo``. Without them, PyTorch emulates
    bfloat16 and autocast runs many times slower than float32.

    Returns
    -------
    bool
        True when the CPU has bfloat16 units.
    """
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        if getattr(torch.cpu, probe, lambda: False)():
            return True
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fin:
            flags = {
                flag
                for line in fin
                if line.lower().startswith(("flags", "features"))
                for flag in line.split(":", 1)[1].split()
            }
    except OSError:
        return False
    return any(flag in flags for flag in BF16_FLAGS)


def usable_precision(precision, device):
    """The precision to compute in on a device, and why another one if so.

    bf16 runs on GPUs that have it and on CPUs with bfloat16 units
    (:func:`cpu_has_bf16`); fp16 on GPUs. Elsewhere it is fp32.

    Arguments
    ---------
    precision : str
        ``fp32``, ``bf16`` or ``fp16`` (SpeechBrain's names).
    device : str
        ``cpu``, ``cuda`` or ``cuda:N``.

    Returns
    -------
    precision : str
        The precision to use.
    reason : str or None
        Why it is not the one asked for; None when it is.

    Example
    -------
    >>> usable_precision("fp16", "cpu")[0]
    'fp32'
    >>> usable_precision("fp32", "cpu")
    ('fp32', None)
    """
    if precision not in PRECISIONS:
        raise SettingsError(
            f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}"
        )
    if precision == "fp32":
        return precision, None
    if str(device).startswith("cuda"):
        if precision == "bf16" and not torch.cuda.is_bf16_supported(
            including_emulation=False
        ):
            return "fp32", "this GPU has no bfloat16 units; use fp16 on it"
        return precision, None
    if precision == "fp16":
        return "fp32", (
            "fp16 is for GPUs, PyTorch has no fast float16 on CPUs; on a CPU with "
            "bfloat16 units, use bf16"
        )
    if cpu_has_bf16():
        return precision, None
    return "fp32", (
        "this CPU has no bfloat16 units (avx512_bf16 or amx_bf16 on x86, bf16 on Arm), "
        "so bf16 would run many times slower than float32"
    )


class UserError(Exception):
    """A problem the user can fix (their input, settings or files), not a bug.

    Command lines show its message alone, without a traceback, and exit with
    status 1 (see :func:`run_command`).
    """


class SettingsError(UserError, ValueError):
    """A YAML key, override or option whose value the recipe cannot use."""


class MissingInputError(UserError, FileNotFoundError):
    """A file, folder or run the user named, or a command needs, is missing."""


class DataError(UserError, ValueError):
    """Bad input found while preparing data.

    The message lists every problem found.
    """


def _wav_data_shortfall(path):
    """Bytes the WAV header promises beyond the end of the file.

    0 if the file is complete or not a WAV. libsndfile quietly reads a
    truncated WAV as a shorter one, so truncation is read off the RIFF
    ``data`` chunk size instead.
    """
    with open(path, "rb") as fin:
        if fin.read(12)[:4] not in (b"RIFF", b"RF64"):
            return 0
        size = os.fstat(fin.fileno()).st_size
        while True:
            header = fin.read(8)
            if len(header) < 8:
                return 0
            chunk, length = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk == b"data":
                if length == 0xFFFFFFFF:  # RF64 / streaming: size unknown here
                    return 0
                return max(0, fin.tell() + length - size)
            fin.seek(length + (length & 1), os.SEEK_CUR)


# Peak amplitude (full scale 1) below which a recording counts as silent: there
# is nothing in it for the model to hear. Preparation and prediction both judge
# by it, so they agree on a file.
SILENCE_PEAK = 1e-4

# What a user can do about each kind of unusable audio file that inspect_audio
# reports, quoted by the preparation's summary and by predict's error column
# alike.
AUDIO_ADVICE = {
    "missing audio": "check the path",
    "not a file": "put the audio file itself at this path",
    "broken link": "point the link at the audio file, or put the file in its place",
    "unreadable audio": "convert it to WAV or FLAC (any sample rate and channel count)",
    "truncated audio": "the file is cut short: write or copy it again",
    "empty audio": "give a recording with sound in it",
    "too short": "give a longer recording",
    "silent audio": "give a recording with sound in it",
    "non-finite audio": (
        "write it again from its source (a failed conversion or gain step leaves NaN or "
        "infinite values in a float WAV)"
    ),
}


def describe_audio_problem(kind, detail):
    """The message for an unusable audio file: its kind, what, and what to do.

    Arguments
    ---------
    kind : str
        The kind of problem, a key of :data:`AUDIO_ADVICE`.
    detail : str
        What was found, naming the file.

    Returns
    -------
    message : str
        ``"<kind>: <detail>; <advice>"``.

    Example
    -------
    >>> describe_audio_problem("missing audio", "x.wav does not exist")
    'missing audio: x.wav does not exist; check the path'
    """
    return f"{kind}: {detail}; {AUDIO_ADVICE[kind]}"


def _absent_file_problem(path):
    """Why ``path``, which is not a regular file, cannot be read.

    It is a folder, a link to nothing, something else, or nothing at all.
    """
    if os.path.isdir(path):
        return "not a file", f"{path} is a folder"
    if os.path.islink(path) and not os.path.exists(path):
        return (
            "broken link",
            f"{path} links to {os.readlink(path)}, which does not exist",
        )
    if os.path.exists(path):
        return "not a file", f"{path} is not a regular file"
    return "missing audio", f"{path} does not exist"


class SampleCheck:
    """Judges a recording block by block while it is decoded.

    It looks for NaN or infinite samples, and for silence: a peak below
    :data:`SILENCE_PEAK` in the channels or in their average (the mono signal
    the model hears: channels in opposite phase cancel out).

    Feed it each decoded block with :meth:`add` (decoding can stop once
    :attr:`non_finite` is true), then ask :meth:`problem`.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the recording, in Hz (to say where the first
        non-finite sample is, in seconds).

    Example
    -------
    >>> check = SampleCheck(16000)
    >>> check.add(np.array([[0.5, -0.5], [0.2, -0.2]], dtype=np.float32))
    >>> check.problem("x.wav")
    ('silent audio', 'x.wav is silent once its channels are averaged to mono')
    """

    def __init__(self, sample_rate):
        self.sample_rate = sample_rate
        self.frames = 0
        self.peak = self.mono_peak = 0.0
        self.first_non_finite = None

    @property
    def non_finite(self):
        """Whether a NaN or infinite sample has been seen.

        Returns
        -------
        seen : bool
            True once a block holding one was added.
        """
        return self.first_non_finite is not None

    def add(self, block):
        """Takes the next block of the recording.

        Arguments
        ---------
        block : numpy.ndarray
            ``[frames, channels]`` float32 samples, following the blocks
            already added.
        """
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            if self.first_non_finite is None:
                self.first_non_finite = self.frames + int(np.argmin(finite))
        elif len(block):
            self.peak = max(self.peak, float(np.abs(block).max()))
            self.mono_peak = max(
                self.mono_peak, float(np.abs(block.mean(axis=1)).max())
            )
        self.frames += len(block)

    def problem(self, path):
        """What was found wrong in the blocks added so far, if anything.

        Arguments
        ---------
        path : str
            The recording, named in the detail.

        Returns
        -------
        problem : tuple or None
            ``(kind, detail)``, ``kind`` a key of :data:`AUDIO_ADVICE`;
            None when the recording is fine.
        """
        if self.non_finite:
            first = self.first_non_finite / self.sample_rate
            return (
                "non-finite audio",
                f"{path} holds NaN or infinite samples (the first at {first:.3f} s)",
            )
        if self.peak < SILENCE_PEAK:
            return (
                "silent audio",
                f"{path} is silent (peak {self.peak:.1e}, below {SILENCE_PEAK:g})",
            )
        if self.mono_peak < SILENCE_PEAK:
            return (
                "silent audio",
                f"{path} is silent once its channels are averaged to mono",
            )
        return None


def _samples_problem(path, samplerate):
    """What :class:`SampleCheck` finds in a file, decoded block by block.

    Decoded in float32, as the audio is loaded for the model, never more than
    one block in memory; None when nothing is wrong.
    """
    check = SampleCheck(samplerate)
    for block in soundfile.blocks(
        path, blocksize=65536, dtype="float32", always_2d=True
    ):
        check.add(block)
        if check.non_finite:
            break
    return check.problem(path)


def inspect_audio(path, *, min_duration, check_silence=True):
    """Checks that an audio file can be used, from its header (and samples).

    The kinds of problem it reports are the keys of :data:`AUDIO_ADVICE`; a
    file it passes with ``check_silence`` is one the model can hear, the same
    verdict that :meth:`EmotionRegressor.load_audio` gives.

    Arguments
    ---------
    path : str
        The audio file.
    min_duration : float
        Seconds below which the encoder cannot take the file.
    check_silence : bool
        Also decode the file, once, and flag it if a sample is NaN or
        infinite, or if it is silent: its peak, or the peak of its channels'
        average, is below :data:`SILENCE_PEAK`. The slowest check: without it
        only the header is read.

    Returns
    -------
    verdict : tuple
        ``(duration_seconds, None)`` for a usable file,
        ``(None, (kind, detail))`` otherwise. Another sample rate or several
        channels are fine: they are resampled and downmixed when the file is
        loaded.

    Example
    -------
    >>> path = str(getfixture("tmp_path") / "quiet.wav")
    >>> soundfile.write(path, np.zeros(1600, dtype=np.float32), 16000)
    >>> inspect_audio(path, min_duration=0.05)[1][0]
    'silent audio'
    >>> inspect_audio(path, min_duration=0.05, check_silence=False)
    (0.1, None)
    """
    if not os.path.isfile(path):
        return None, _absent_file_problem(path)
    try:
        info = soundfile.info(path)
        shortfall = _wav_data_shortfall(path)
    except (RuntimeError, OSError) as error:
        return None, ("unreadable audio", f"{path}: {error}")
    if shortfall:
        return None, (
            "truncated audio",
            f"{path} ends {shortfall} bytes before its header says",
        )
    if info.frames == 0:
        return None, ("empty audio", f"{path} holds no samples")
    duration = info.frames / info.samplerate
    if duration < min_duration:
        return None, (
            "too short",
            f"{path} lasts {duration:.3f} s; the encoder needs at least {min_duration} s",
        )
    if check_silence:
        try:
            problem = _samples_problem(path, info.samplerate)
        except (RuntimeError, OSError) as error:
            return None, ("unreadable audio", f"{path}: {error}")
        if problem is not None:
            return None, problem
    return duration, None


def load_audio(path, sample_rate=16000):
    """Reads a file as a mono float32 tensor at ``sample_rate``.

    Channels are averaged and other rates resampled, so the recipe takes audio
    as it comes.

    Arguments
    ---------
    path : str
        An audio file that soundfile reads.
    sample_rate : int
        Rate of the result, in Hz.

    Returns
    -------
    signal : torch.Tensor
        ``[samples]`` float32 waveform.

    Example
    -------
    >>> path = str(getfixture("tmp_path") / "stereo.wav")
    >>> soundfile.write(path, np.full((800, 2), 0.5, np.float32), 8000)
    >>> load_audio(path, 16000).shape
    torch.Size([1600])
    """
    data, rate = soundfile.read(path, dtype="float32", always_2d=True)
    signal = torch.from_numpy(data).mean(dim=1)
    if rate != sample_rate:
        signal = torchaudio.functional.resample(signal, rate, sample_rate)
    return signal


def _reduced_rates(orig_freq, new_freq):
    """The two rates divided by their greatest common divisor (torchaudio's)."""
    divisor = math.gcd(int(orig_freq), int(new_freq))
    return int(orig_freq) // divisor, int(new_freq) // divisor


def resampling_reach(orig_freq, new_freq):
    """How far torchaudio's resampling filter reaches, to resample audio in
    parts: ``torchaudio.functional.resample`` (its default filter) computes
    output group ``k`` of ``new`` samples from the input around ``k * orig``.

    Arguments
    ---------
    orig_freq : int
        The input's rate, in Hz.
    new_freq : int
        The output's rate, in Hz.

    Returns
    -------
    orig : int
        Input samples of a group.
    new : int
        Output samples of a group.
    width : int
        Input samples the filter reaches beyond a group's own.

    Example
    -------
    >>> resampling_reach(44100, 16000)
    (441, 160, 17)
    """
    orig, new = _reduced_rates(orig_freq, new_freq)
    return orig, new, math.ceil(6 * orig / (min(orig, new) * 0.99))


def resampled_length(frames, orig_freq, new_freq):
    """Samples of a recording of ``frames`` samples once resampled.

    The length ``torchaudio.functional.resample`` gives, computed as it does.

    Arguments
    ---------
    frames : int
        Samples at ``orig_freq``.
    orig_freq : int
        The recording's rate, in Hz.
    new_freq : int
        The rate it is resampled to, in Hz.

    Returns
    -------
    length : int
        Samples at ``new_freq``.

    Example
    -------
    >>> resampled_length(44100, 44100, 16000), resampled_length(7, 8000, 16000)
    (16000, 14)
    """
    if orig_freq == new_freq:
        return int(frames)
    orig, new = _reduced_rates(orig_freq, new_freq)
    return int(torch.ceil(torch.as_tensor(new * frames / orig)).item())


def read_segment(path, start, stop, sample_rate, *, info=None):
    """``load_audio(path, sample_rate)[start:stop]`` up to float rounding
    (about 1e-7), reading only that part of the file and the margin the
    resampling filter needs (:func:`resampling_reach`).

    Arguments
    ---------
    path : str
        An audio file that soundfile reads.
    start : int
        First sample, at ``sample_rate``.
    stop : int
        One past the last sample, at ``sample_rate``.
    sample_rate : int
        Rate of the result, in Hz.
    info : soundfile._SoundFileInfo or None
        The file's ``soundfile.info``, if already read.

    Returns
    -------
    signal : torch.Tensor
        ``[stop - start]`` (fewer past the end of the file) mono float32
        samples.

    Example
    -------
    >>> path = str(getfixture("tmp_path") / "ramp.wav")
    >>> soundfile.write(path, np.linspace(-0.5, 0.5, 8000), 8000)
    >>> whole = load_audio(path, 16000)
    >>> part = read_segment(path, 5000, 9000, 16000)
    >>> bool((part - whole[5000:9000]).abs().max() < 1e-6)
    True
    """
    info = info or soundfile.info(path)
    rate = info.samplerate
    if rate == sample_rate:
        data, _ = soundfile.read(
            path, start=start, stop=stop, dtype="float32", always_2d=True
        )
        return torch.from_numpy(data).mean(dim=1)
    orig, new, width = resampling_reach(rate, sample_rate)
    margin = math.ceil(width / orig) + 2  # in blocks of orig inputs
    first = max(0, start // new - margin)
    last = -(-stop // new) + margin
    data, _ = soundfile.read(
        path,
        start=first * orig,
        stop=min(info.frames, last * orig),
        dtype="float32",
        always_2d=True,
    )
    signal = torch.from_numpy(data).mean(dim=1)
    resampled = torchaudio.functional.resample(signal, rate, sample_rate)
    offset = first * new
    total = resampled_length(info.frames, rate, sample_rate)
    return resampled[start - offset : min(stop, total) - offset]


def from_unit_scale(values, *, low, high):
    """Inverse of :func:`to_unit_scale`: model outputs on the corpus' scale.

    Arguments
    ---------
    values : torch.Tensor
        Model outputs on the [0, 1] scale (any shape; not clipped).
    low : float
        Lowest label of the corpus' scale, where 0 goes.
    high : float
        Highest label of the corpus' scale, where 1 goes.

    Returns
    -------
    labels : torch.Tensor
        The values on the corpus' scale, same shape.

    Example
    -------
    >>> from_unit_scale(
    ...     torch.tensor([0.0, 0.5, 1.0]), low=1.0, high=7.0
    ... ).tolist()
    [1.0, 4.0, 7.0]
    """
    return values * (high - low) + low


def _length_mask(lengths, max_len):
    """``[B, max_len]`` boolean mask, true before each length.

    Built from shapes alone, so that it follows a traced (ONNX) model's
    dynamic batch and length.
    """
    positions = torch.arange(max_len, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def _from_config(hf_class, config, preprocessor_config):
    """SpeechBrain's ``hf_class`` wrapper of a model built from its config.

    The wrappers read a model's configuration from a folder, so the two
    configurations are written to a temporary one, removed afterwards.
    """
    folder = tempfile.mkdtemp(prefix="ssl_config_")
    try:
        for name, values in (
            ("config.json", config),
            ("preprocessor_config.json", preprocessor_config),
        ):
            with open(os.path.join(folder, name), "w") as fout:
                json.dump(values, fout)
        return _built_from_config(hf_class)(
            source=folder, save_path=folder, freeze=False
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def masked_mean(frames, lengths):
    """Mean over the valid frames of each sequence.

    SpeechBrain's ``StatisticsPooling`` is not used because it adds random
    noise to the mean and derives frame counts by rounding relative lengths,
    which can be one frame off.

    Arguments
    ---------
    frames : torch.Tensor
        ``[B, T, D]``.
    lengths : torch.Tensor
        ``[B]`` number of valid frames of each sequence (absolute, not
        relative).

    Returns
    -------
    means : torch.Tensor
        ``[B, D]``.

    Example
    -------
    >>> frames = torch.tensor([[[1.0], [3.0], [100.0]]])
    >>> masked_mean(frames, torch.tensor([2])).tolist()
    [[2.0]]
    """
    mask = _length_mask(lengths, frames.shape[1]).to(frames.dtype).unsqueeze(-1)
    return (frames * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


def normalize_waveforms(wavs, num_samples, eps=1e-7):
    """Zero mean, unit variance over each waveform's own samples.

    Padding stays zero. The same as Hugging Face's
    ``Wav2Vec2FeatureExtractor(do_normalize=True)`` applied to each utterance
    alone.

    Arguments
    ---------
    wavs : torch.Tensor
        ``[B, S]`` waveforms, zero-padded.
    num_samples : torch.Tensor
        ``[B]`` number of valid samples of each waveform (absolute).
    eps : float
        Added to the variance, against division by zero.

    Returns
    -------
    normalized : torch.Tensor
        ``[B, S]``, zero beyond each waveform's length.

    Example
    -------
    >>> wavs = torch.tensor([[1.0, 3.0, 0.0]])
    >>> out = normalize_waveforms(wavs, torch.tensor([2]))
    >>> out[:, :2].round().tolist(), out[0, 2].item() == 0
    ([[-1.0, 1.0]], True)
    """
    mask = _length_mask(num_samples, wavs.shape[1]).to(wavs.dtype)
    count = num_samples.clamp_min(1).unsqueeze(1).to(wavs.dtype)
    mean = (wavs * mask).sum(dim=1, keepdim=True) / count
    var = ((wavs - mean).pow(2) * mask).sum(dim=1, keepdim=True) / count
    return (wavs - mean) / torch.sqrt(var + eps) * mask


def _channels_last_layers(extractor):
    """The CNN feature encoder's layers as ``(conv, norm, activation)``.

    Arguments
    ---------
    extractor : torch.nn.Module
        A Hugging Face feature encoder (wav2vec2, HuBERT, WavLM): its
        ``conv_layers`` each hold ``conv``, ``activation`` and, optionally,
        ``layer_norm``.

    Returns
    -------
    layers : list of tuple or None
        ``(conv, norm, activation)`` per layer, ``norm`` a LayerNorm over
        channels, a GroupNorm with a group per channel, or None; None if any
        layer is of another kind.
    """
    layers = []
    for layer in getattr(extractor, "conv_layers", ()):
        conv = getattr(layer, "conv", None)
        norm = getattr(layer, "layer_norm", None)
        if not (
            type(conv) is torch.nn.Conv1d
            and conv.padding == (0,)
            and conv.dilation == (1,)
            and conv.groups == 1
            and hasattr(layer, "activation")
        ):
            return None
        if norm is not None and not (
            type(norm) is torch.nn.LayerNorm
            or (
                type(norm) is torch.nn.GroupNorm
                and norm.num_groups == norm.num_channels
            )
        ):
            return None
        layers.append((conv, norm, layer.activation))
    return layers or None


def channels_last_features(layers, input_values):
    """The CNN feature encoder's output, each convolution as one matrix product.

    The same function as the Hugging Face encoder's convolutions, norms and
    activations, computed with time before channels in memory, so that the
    norm over channels needs no transposed copy.

    Arguments
    ---------
    layers : list of tuple
        ``(conv, norm, activation)`` per layer, from
        :func:`_channels_last_layers`.
    input_values : torch.Tensor
        ``[B, S]`` waveforms.

    Returns
    -------
    features : torch.Tensor
        ``[B, C, T]``, as the Hugging Face encoder returns them.

    Example
    -------
    >>> conv = torch.nn.Conv1d(1, 4, kernel_size=10, stride=5)
    >>> layers = [(conv, torch.nn.LayerNorm(4), torch.nn.GELU())]
    >>> wavs = torch.randn(2, 400)
    >>> reference = layers[0][2](
    ...     layers[0][1](conv(wavs[:, None]).transpose(1, 2)).transpose(1, 2)
    ... )
    >>> features = channels_last_features(layers, wavs)
    >>> features.shape, torch.allclose(features, reference, atol=1e-5)
    (torch.Size([2, 4, 79]), True)
    """
    hidden = input_values.unsqueeze(-1)  # [B, S, 1]
    for conv, norm, activation in layers:
        stride = conv.stride[0]
        if conv.in_channels == 1:  # the first: a product with the unfolded wave
            patches = hidden.unfold(1, conv.kernel_size[0], stride)
            hidden = torch.nn.functional.linear(
                patches.flatten(2), conv.weight.flatten(1), conv.bias
            )
        else:  # a 2-D convolution in channels-last memory, height 1
            hidden = torch.nn.functional.conv2d(
                hidden.transpose(1, 2)
                .unsqueeze(2)
                .contiguous(memory_format=torch.channels_last),
                conv.weight.unsqueeze(2).contiguous(
                    memory_format=torch.channels_last
                ),
                conv.bias,
                stride=(1, stride),
            )
            hidden = hidden.squeeze(2).transpose(1, 2)  # [B, T, C]
        if isinstance(norm, torch.nn.GroupNorm):
            hidden = norm(hidden.transpose(1, 2)).transpose(1, 2)
        elif norm is not None:
            hidden = norm(hidden)
        hidden = activation(hidden)
    return hidden.transpose(1, 2)


def _frozen_cnn_forward(extractor, input_values):
    """Forward of a Hugging Face feature encoder: channels-last when frozen on CPU.

    Installed on the encoder's instance by :class:`SSLEncoder`.

    Arguments
    ---------
    extractor : torch.nn.Module
        The feature encoder.
    input_values : torch.Tensor
        ``[B, S]`` waveforms.

    Returns
    -------
    features : torch.Tensor
        ``[B, C, T]``.
    """
    layers = _channels_last_layers(extractor)
    if (
        extractor._requires_grad
        or layers is None
        or input_values.device.type != "cpu"  # cuDNN is fast as it is
        or torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
    ):
        return type(extractor).forward(extractor, input_values)
    with torch.no_grad():
        return channels_last_features(layers, input_values)


def keep_mask(shape, p, device=None):
    """A Bernoulli mask of elements to keep, from 16 random bits per element.

    The CPU's ``torch.bernoulli_`` costs several times more per element; this
    draws 32 random bits for every two elements from PyTorch's generator.

    Arguments
    ---------
    shape : torch.Size or tuple of int
        The mask's shape.
    p : float
        The probability of dropping an element, rounded to a multiple of
        ``2 ** -16``.
    device : torch.device or None
        Where the mask is made.

    Returns
    -------
    keep : torch.Tensor
        A bool tensor of ``shape``.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> keep = keep_mask((1000, 1000), 0.1)
    >>> round(1 - keep.float().mean().item(), 3)
    0.1
    """
    n = math.prod(shape)
    bits = torch.empty((n + 1) // 2, dtype=torch.int32, device=device)
    bits.random_(-(2**31), 2**31)
    halves = bits.view(torch.int16)[:n].view(shape)
    return halves >= round(p * 2**16) - 2**15


def _dropped(x, p):
    """Dropout in training, its mask from :func:`keep_mask`.

    Arguments
    ---------
    x : torch.Tensor
        The input.
    p : float
        The probability of zeroing an element.

    Returns
    -------
    y : torch.Tensor
        ``x``, each element zeroed with probability ``p``, the rest divided
        by ``1 - p``.
    """
    if p == 0:
        return x
    if p >= 1:
        return x * 0
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1 / (1 - p))
    return x * scale


class FastCPUDropout(torch.overrides.TorchFunctionMode):
    """Dropout and attention dropout with :func:`keep_mask`'s masks.

    Within this mode, ``torch.nn.functional.dropout`` in training and
    ``scaled_dot_product_attention`` with ``dropout_p > 0`` (which PyTorch
    runs on CPU in its reference implementation, with ``bernoulli_``) draw
    their masks with :func:`keep_mask`. Everything else runs as it is.

    Example
    -------
    >>> x = torch.ones(4, 1000)
    >>> with FastCPUDropout():
    ...     y = torch.nn.functional.dropout(x, 0.5, training=True)
    >>> sorted(set(y.flatten().tolist()))
    [0.0, 2.0]
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        """Runs ``func``, the two kinds of dropout with fast masks.

        Arguments
        ---------
        func : callable
            The PyTorch function called.
        types : tuple
            Tensor subclasses of the arguments.
        args : tuple
            Its positional arguments.
        kwargs : dict or None
            Its keyword arguments.

        Returns
        -------
        result : object
            What ``func`` returns.
        """
        kwargs = kwargs or {}
        if func is torch.nn.functional.dropout:
            arguments = dict(
                zip(("input", "p", "training", "inplace"), args, strict=False),
                **kwargs,
            )
            if arguments.get("training", True) and not arguments.get(
                "inplace", False
            ):
                return _dropped(arguments["input"], arguments.get("p", 0.5))
        elif func is torch.nn.functional.scaled_dot_product_attention:
            names = ("query", "key", "value", "attn_mask", "dropout_p")
            arguments = dict(zip(names, args, strict=False), **kwargs)
            if (
                arguments.get("dropout_p", 0.0) > 0
                and not arguments.get("is_causal", False)
                and not arguments.get("enable_gqa", False)
                and set(arguments)
                <= {*names, "scale", "is_causal", "enable_gqa"}
            ):
                return _attention_with_dropout(**arguments)
        return func(*args, **kwargs)


def _attention_with_dropout(
    query, key, value, attn_mask=None, dropout_p=0.0, scale=None, **_
):
    """Scaled dot-product attention as PyTorch defines it, with :func:`_dropped`.

    Arguments
    ---------
    query, key, value : torch.Tensor
        ``[..., L, E]``, ``[..., S, E]`` and ``[..., S, Ev]``.
    attn_mask : torch.Tensor or None
        Broadcast to ``[..., L, S]``: bool (True: attend) or added to the
        scores.
    dropout_p : float
        Dropout of the attention weights.
    scale : float or None
        Of the scores; None: ``1 / sqrt(E)``.
    **_
        What :class:`FastCPUDropout` lets through (``is_causal`` and
        ``enable_gqa`` False).

    Returns
    -------
    output : torch.Tensor
        ``[..., L, Ev]``.
    """
    if scale is None:
        scale = 1 / math.sqrt(query.shape[-1])
    scores = query @ key.transpose(-2, -1) * scale
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(
                ~attn_mask, torch.finfo(scores.dtype).min
            )
        else:
            scores = scores + attn_mask
    weights = _dropped(torch.softmax(scores, dim=-1), dropout_p)
    return weights @ value


class SSLEncoder(torch.nn.Module):
    """A self-supervised speech encoder with mean pooling.

    Waveform in, utterance embedding out.

    Arguments
    ---------
    hf_class : callable
        SpeechBrain's wrapper class, e.g.
        ``speechbrain.integrations.huggingface.Wav2Vec2`` (``WavLM`` and
        ``HuBERT`` work the same way).
    source : str or None
        Hub id or local folder of the pretrained model; None with ``config``.
    save_path : str or None
        Where hub downloads are cached; None with ``config``.
    num_layers : int or None
        Transformer layers kept, counted from the bottom; the rest are deleted
        (paper: 12 of wav2vec2-large-robust's 24). The encoder's final layer
        norm is kept. None keeps all.
    freeze : bool
        Freeze the whole encoder (the RH baseline): no parameter is trained
        and the module stays in eval mode, so its dropout is off even while
        the Brain trains the head.
    freeze_feature_extractor : bool
        Freeze the CNN feature encoder (the paper fine-tunes the transformer
        only).
    pretrained : bool
        Load the source's weights. False builds the model from the source's
        ``config.json`` with random weights, for an exported model whose
        weights come from its checkpoint: the folder then needs only
        ``config.json`` and ``preprocessor_config.json``.
    config : dict or None
        The model's Hugging Face configuration (what its ``config.json``
        holds), instead of ``source``: the model is built from it with random
        weights (``pretrained`` must be False), as an exported model's
        ``hyperparams.yaml`` does, so that it needs no file but its weights.
    preprocessor_config : dict or None
        What its ``preprocessor_config.json`` holds, with ``config``.

    Raises
    ------
    MissingInputError
        ``source`` cannot be loaded (no such hub id or folder, or no network).
    SettingsError
        ``num_layers`` is not between 1 and the encoder's layer count.

    Example
    -------
    >>> from speechbrain.integrations.huggingface import Wav2Vec2
    >>> from ctsl_brain.models import tiny_encoder_folder
    >>> folder = tiny_encoder_folder(getfixture("tmp_path"))
    >>> encoder = SSLEncoder(Wav2Vec2, folder, save_path=folder, num_layers=1)
    >>> encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 32])
    """

    def __init__(
        self,
        hf_class,
        source=None,
        save_path=None,
        *,
        num_layers=None,
        freeze=False,
        freeze_feature_extractor=True,
        pretrained=True,
        config=None,
        preprocessor_config=None,
    ):
        super().__init__()
        if config is not None:
            if pretrained:
                raise ValueError(
                    "a model built from config has no pretrained weights"
                )
            self.ssl = _from_config(hf_class, config, preprocessor_config or {})
        else:
            self._load(hf_class, source, save_path, pretrained)
        self._prepare(num_layers, freeze, freeze_feature_extractor, source)

    def _load(self, hf_class, source, save_path, pretrained):
        """Loads SpeechBrain's wrapper of ``source`` into ``self.ssl``."""
        if not pretrained:
            hf_class = _built_from_config(hf_class)
        try:
            self.ssl = hf_class(
                source=source, save_path=save_path, freeze=False
            )
        except (
            OSError
        ) as error:  # transformers: no such hub id or folder, or no network
            if getattr(error, "errno", None) is not None:
                raise  # a file system error, not the source
            reason = (
                str(error).strip().splitlines()[0]
                if str(error).strip()
                else "not found"
            )
            raise MissingInputError(
                f"encoder source {source!r} cannot be loaded ({reason}): give a hub id that can "
                "be downloaded here, or a local folder holding config.json, the weights and "
                "preprocessor_config.json (--encoder_source /path/to/folder)"
            ) from None

    def _prepare(self, num_layers, freeze, freeze_feature_extractor, source):
        """Prunes, moves normalisation here and freezes, as asked."""
        model = self.ssl.model
        available = len(model.encoder.layers)
        if num_layers is not None:
            if not 1 <= num_layers <= available:
                raise SettingsError(
                    f"num_layers={num_layers}, but {source} has {available} transformer layers: "
                    f"choose --encoder_layers from 1 to {available}"
                )
            del model.encoder.layers[num_layers:]
            model.config.num_hidden_layers = num_layers

        # The integration normalises over the padded length; this class does it
        # per utterance.
        self.normalize_wav = bool(self.ssl.normalize_wav)
        self.ssl.normalize_wav = False

        if freeze_feature_extractor:
            # Also stops the CNN from propagating gradients to its input (unlike
            # requires_grad).
            model.feature_extractor._freeze_parameters()
            # Faster on CPU, where the convolutions in Hugging Face's layout
            # spend most of their time copying (the weights stay where they
            # were, so checkpoints are unchanged).
            model.feature_extractor.forward = types.MethodType(
                _frozen_cnn_forward, model.feature_extractor
            )
        self.freeze = freeze
        if freeze:
            for param in self.parameters():
                param.requires_grad_(False)
        self.train()

    @property
    def output_size(self):
        """Dimension of the embedding.

        Returns
        -------
        size : int
            The encoder's hidden size.
        """
        return self.ssl.model.config.hidden_size

    def train(self, mode=True):
        """Sets the training mode; a frozen encoder always stays in eval mode.

        Arguments
        ---------
        mode : bool
            True for training mode, False for eval mode.

        Returns
        -------
        module : SSLEncoder
            The encoder itself, as ``torch.nn.Module.train`` returns.
        """
        return super().train(mode and not self.freeze)

    def frame_lengths(self, num_samples):
        """Number of encoder frames for inputs of ``num_samples`` samples.

        Arguments
        ---------
        num_samples : torch.Tensor
            Input lengths, in samples (absolute).

        Returns
        -------
        num_frames : torch.Tensor
            The matching frame counts, a LongTensor of the same shape.
        """
        return self.ssl.model._get_feat_extract_output_lengths(
            num_samples
        ).long()

    def forward(self, wavs, wav_lens):
        """Embeds a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms at 16 kHz, zero-padded.
        wav_lens : torch.Tensor
            ``[B]`` lengths relative to ``S`` (SpeechBrain's convention).

        Returns
        -------
        embeddings : torch.Tensor
            ``[B, D]`` mean-pooled embeddings.
        """
        dropout = contextlib.nullcontext()
        if (
            self.training
            and torch.is_grad_enabled()
            and wavs.device.type == "cpu"
        ):
            dropout = FastCPUDropout()
        grad = torch.set_grad_enabled(
            torch.is_grad_enabled() and not self.freeze
        )
        with grad, dropout:
            num_samples = torch.round(wav_lens * wavs.shape[1]).long()
            if self.normalize_wav:
                wavs = normalize_waveforms(wavs, num_samples)
            # The model itself rather than SpeechBrain's wrapper, which builds
            # the same mask, but in a way that cannot be traced for ONNX.
            frames = self.ssl.model(
                wavs,
                attention_mask=_length_mask(num_samples, wavs.shape[1]).long(),
            ).last_hidden_state
            if self.ssl.output_norm:  # as the wrapper does
                frames = torch.nn.functional.layer_norm(
                    frames, frames.shape[1:]
                )
            return masked_mean(frames, self.frame_lengths(num_samples))


def _built_from_config(hf_class):
    """``hf_class``, building its model from the source's config alone.

    ``hf_class`` is one of SpeechBrain's Hugging Face wrappers. SpeechBrain
    1.1's wrappers have no switch for it (they always load weights, from the
    hub or a folder), so their loading step is replaced.
    """

    class BuiltFromConfig(hf_class):
        """The wrapper, its model built with random weights from the config."""

        def _from_pretrained(
            self, source, save_path, cache_dir, device=None, **kwargs
        ):
            self.model = self.auto_class.from_config(self.config)
            if device is not None:
                self.model.to(device)

    BuiltFromConfig.__name__ = BuiltFromConfig.__qualname__ = hf_class.__name__
    return BuiltFromConfig


class RegressionHead(torch.nn.Sequential):
    """The downstream head: hidden layers, then a Linear output layer.

    Each hidden layer is Linear, LayerNorm, ReLU, Dropout.

    Arguments
    ---------
    input_size : int
        Embedding dimension.
    hidden_size : int
        Width of each hidden layer (paper: 1024).
    num_hidden_layers : int
        Paper: 2; the authors' released code used 1; 0 gives a linear head.
    dropout : float
        Dropout after each hidden layer (paper: 0.5).
    num_outputs : int
        Attributes predicted (arousal, dominance, valence).

    Example
    -------
    >>> head = RegressionHead(32, hidden_size=16)
    >>> head(torch.randn(4, 32)).shape
    torch.Size([4, 3])
    """

    def __init__(
        self,
        input_size,
        *,
        hidden_size=1024,
        num_hidden_layers=2,
        dropout=0.5,
        num_outputs=3,
    ):
        layers = []
        size = input_size
        for _ in range(num_hidden_layers):
            layers += [
                torch.nn.Linear(size, hidden_size),
                torch.nn.LayerNorm(hidden_size),
                torch.nn.ReLU(),
                torch.nn.Dropout(dropout),
            ]
            size = hidden_size
        layers.append(torch.nn.Linear(size, num_outputs))
        super().__init__(*layers)


class EmotionGraph(torch.nn.Module):
    """Encoder, head and label scale as one module: what ONNX export traces.

    Arguments
    ---------
    encoder : SSLEncoder
        The encoder.
    head : RegressionHead
        The head.
    label_min : float
        Lowest label of the training scale.
    label_max : float
        Highest label of the training scale.

    Example
    -------
    >>> graph = EmotionGraph(
    ...     lambda wavs, lens: wavs[:, :4],
    ...     RegressionHead(4, hidden_size=8),
    ...     1,
    ...     7,
    ... )
    >>> [t.shape for t in graph(torch.randn(2, 16), torch.ones(2))]
    [torch.Size([2, 3]), torch.Size([2, 4])]
    """

    def __init__(self, encoder, head, label_min, label_max):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.label_min = label_min
        self.label_max = label_max

    def forward(self, wavs, wav_lens):
        """Predictions on the label scale and pooled embeddings.

        Arguments
        ---------
        wavs : torch.Tensor
            ``[B, S]`` waveforms, zero-padded.
        wav_lens : torch.Tensor
            ``[B]`` lengths relative to ``S``.

        Returns
        -------
        predictions : torch.Tensor
            ``[B, 3]`` arousal, dominance, valence on the label scale.
        embeddings : torch.Tensor
            ``[B, D]`` pooled embeddings.
        """
        embeddings = self.encoder(wavs, wav_lens)
        predictions = from_unit_scale(
            self.head(embeddings), low=self.label_min, high=self.label_max
        )
        return predictions, embeddings


def window_bounds(length, window):
    """Bounds of the fewest pieces of at most ``window`` samples.

    The pieces are consecutive, non-overlapping, cover all ``length``
    samples and are of equal length (to a sample).

    Arguments
    ---------
    length : int
        Samples to cover.
    window : int
        Longest piece, in samples.

    Returns
    -------
    bounds : list of tuple
        ``(start, stop)`` of each piece.

    Example
    -------
    >>> window_bounds(25, 10)
    [(0, 8), (8, 16), (16, 25)]
    """
    count = max(1, math.ceil(length / window))
    cuts = [length * i // count for i in range(count + 1)]
    return list(zip(cuts[:-1], cuts[1:], strict=True))


def split_windows(signal, window):
    """Cuts a waveform into the fewest pieces of at most ``window`` samples.

    The pieces are those of :func:`window_bounds`; a signal no longer than
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
    return [
        signal[start:stop] for start, stop in window_bounds(len(signal), window)
    ]


def hop_windows(length, window, hop):
    """Windows of ``window`` samples every ``hop`` samples, for a time series.

    The last window ends at the end of the signal, so that all of it is
    covered; a signal no longer than ``window`` is one window.

    Arguments
    ---------
    length : int
        Samples of the signal.
    window : int
        Window length, in samples.
    hop : int
        Samples between the starts of consecutive windows (at least 1).

    Returns
    -------
    bounds : list of tuple
        ``(start, stop)`` of each window, in order.

    Example
    -------
    >>> hop_windows(25, 10, 5)
    [(0, 10), (5, 15), (10, 20), (15, 25)]
    >>> hop_windows(27, 10, 10)
    [(0, 10), (10, 20), (17, 27)]
    >>> hop_windows(7, 10, 5)
    [(0, 7)]
    """
    if length <= window:
        return [(0, length)]
    bounds = [
        (start, start + window) for start in range(0, length - window + 1, hop)
    ]
    if bounds[-1][1] < length:
        bounds.append((length - window, length))
    return bounds


class EmotionRegressor(Pretrained):
    """Speech emotion regression with an exported model.

    Waveforms or files in, arousal, dominance and valence out, on the label
    scale of the training run (1-7 for MSP-Podcast), as the run's evaluation
    computes them; clipped to the scale only with the model's
    ``clip_to_scale``. Files are read and checked as in training
    (:func:`inspect_audio`, :func:`read_segment`); a file longer than
    ``window_seconds`` is embedded window by window, the windows' frames
    pooled together (:func:`window_bounds`). A prediction that is not a finite
    number is refused. It runs on the device of ``run_opts``, or with
    onnxruntime after :meth:`use_onnx`. The project's docs/deployment.md says
    more.

    Arguments
    ---------
    modules : dict of torch.nn.Module
        ``encoder`` (an :class:`SSLEncoder`) and ``head``.
    hparams : dict
        The model's hyperparameters; :attr:`HPARAMS_NEEDED` are required.
    run_opts : dict or None
        SpeechBrain's run options, e.g. ``{"device": "cuda:0"}``.
    freeze_params : bool
        Keep the parameters from training (SpeechBrain's default, True).

    Example
    -------
    >>> model = foreign_class(
    ...     source="models/teacher",
    ...     pymodule_file="custom_interface.py",
    ...     classname="EmotionRegressor",
    ... )  # doctest: +SKIP
    >>> model.predict_file("call.wav")  # doctest: +SKIP
    {'arousal': 4.12, 'dominance': 4.37, 'valence': 3.95}
    """

    MODULES_NEEDED = ["encoder", "head"]
    HPARAMS_NEEDED = [
        "sample_rate",
        "label_min",
        "label_max",
        "min_duration",
        "window_seconds",
    ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.onnx_session = None
        # run_opts' precision: bf16 where the device has it (usable_precision), fp16 on GPUs.
        precision, reason = usable_precision(self.precision, self.device)
        if reason is not None:
            warnings.warn(
                f"precision {self.precision} ignored on {self.device}: {reason}; "
                "predicting in float32",
                stacklevel=2,
            )
        self.precision = precision
        self.inference_ctx = torch.autocast(
            self.device_type,
            dtype=AUTOCAST_TYPES[precision],
            enabled=precision != "fp32",
        )

    @classmethod
    def from_hparams(
        cls, source, hparams_file="hyperparams.yaml", overrides=None, **kwargs
    ):
        """Loads an exported model folder (``python -m ctsl_brain export``).

        The same as ``foreign_class(source, hparams_file, "custom_interface.py",
        "EmotionRegressor")``, with a clear error for a local folder that is
        not an exported model.

        Arguments
        ---------
        source : str
            The model folder, or a model hub id.
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
        MissingInputError
            ``source`` is a local path but not a folder holding
            ``hparams_file``: the message says how to export one.
        """
        source = str(source)
        export = (
            f"python -m ctsl_brain export --run <output_folder> --out {source}"
        )
        # "owner/name" that is no local path: SpeechBrain fetches it from the hub.
        hub_id = (
            source.count("/") == 1
            and not source.startswith((".", "/", "~"))
            and not os.path.exists(source.split("/")[0])
        )
        if not hub_id and not os.path.isdir(source):
            raise MissingInputError(
                f"model folder {source} does not exist: give the folder an export wrote, or "
                f"export a trained run there first ({export})"
            )
        if not hub_id and not os.path.isfile(
            os.path.join(source, hparams_file)
        ):
            raise MissingInputError(
                f"{source} is not a model folder (it has no {hparams_file}): give the folder an "
                f"export wrote, or export a trained run there first ({export})"
            )
        # The model's hyperparams.yaml names this module as custom_interface,
        # which foreign_class makes importable; here it is this module.
        sys.modules.setdefault("custom_interface", sys.modules[__name__])
        return super().from_hparams(
            source, hparams_file, overrides=overrides or {}, **kwargs
        )

    def use_onnx(self, path, *, providers=None, threads=None):
        """Runs the model with onnxruntime from now on.

        The predict methods then give the ONNX model's numbers (the same
        windows, batches and checks); :meth:`predict_batch` too. A file of
        several windows gets the head of this model applied to its merged
        embedding, as with PyTorch (the ONNX head is not quantised).

        Arguments
        ---------
        path : str
            ``model.onnx`` or ``model.int8.onnx`` of an export, or the
            export's folder (then ``model.onnx``).
        providers : list of str or None
            onnxruntime's execution providers; None: the CPU.
        threads : int or None
            Threads of an operator; None: onnxruntime's default.

        Raises
        ------
        MissingInputError
            There is no such file, or onnxruntime is not installed.
        """
        path = str(path)
        if os.path.isdir(path):
            path = os.path.join(path, "model.onnx")
        if not os.path.isfile(path):
            raise MissingInputError(
                f"no ONNX model at {path}: export the run with --onnx (or --onnx-int8) to "
                "write one"
            )
        try:
            import onnxruntime
        except ImportError:
            raise MissingInputError(
                "the ONNX backend needs onnxruntime: pip install onnxruntime "
                "(the version pinned in the recipe's requirements-onnx.txt)"
            ) from None
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.onnx_session = onnxruntime.InferenceSession(
            path, options, providers=providers or ["CPUExecutionProvider"]
        )

    def load_audio(self, path):
        """Reads a whole file as the model hears it.

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
        DataError
            The file cannot be used (see :func:`inspect_audio`): the message
            names it, says what is wrong and what to do, as the training data
            preparation would.
        """
        info, length = self._open(path)
        return self._read(path, 0, length, info)

    def _open(self, path):
        """Checks a file; returns its soundfile info and length at our rate."""
        path = str(path)
        _, problem = inspect_audio(path, min_duration=self.hparams.min_duration)
        if problem is not None:
            raise DataError(describe_audio_problem(*problem))
        try:
            info = soundfile.info(path)
        except (RuntimeError, OSError) as error:
            raise DataError(
                describe_audio_problem("unreadable audio", f"{path}: {error}")
            ) from error
        rate = self.hparams.sample_rate
        return info, resampled_length(info.frames, info.samplerate, rate)

    def _read(self, path, start, stop, info):
        """Samples ``start`` to ``stop`` of a checked file, or a DataError."""
        try:
            return read_segment(
                str(path), start, stop, self.hparams.sample_rate, info=info
            )
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
            ``[batch, embedding size]``, float32, on the model's device (on
            the CPU with ONNX).
        """
        return self._run(wavs, wav_lens)[1]

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
            ``[batch, 3]``: arousal, dominance, valence on the label scale
            (clipped to it if the model's ``clip_to_scale`` is true), on the
            model's device.
        """
        return self._on_scale(
            from_unit_scale(
                self.mods.head(embeddings.to(self.device)),
                low=self.hparams.label_min,
                high=self.hparams.label_max,
            )
        )

    def _on_scale(self, predictions):
        """Clips predictions to the label scale if the model says so."""
        if getattr(self.hparams, "clip_to_scale", False):
            return predictions.clamp(
                self.hparams.label_min, self.hparams.label_max
            )
        return predictions

    @torch.no_grad()
    def _run(self, wavs, wav_lens=None):
        """Predictions and embeddings of a batch, by the chosen backend."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        if wav_lens is None:
            wav_lens = torch.ones(wavs.shape[0])
        if self.onnx_session is not None:
            predictions, embeddings = self.onnx_session.run(
                ["predictions", "embedding"],
                {
                    "wavs": wavs.detach().cpu().float().numpy(),
                    "wav_lens": wav_lens.detach().cpu().float().numpy(),
                },
            )
            return (
                self._on_scale(torch.from_numpy(predictions)),
                torch.from_numpy(embeddings),
            )
        wavs = wavs.to(self.device, torch.float32)
        with self.inference_ctx:
            embeddings = self.mods.encoder(
                wavs, wav_lens.to(self.device, torch.float32)
            )
            predictions = self.predict_from_embeddings(embeddings)
        return predictions.float(), embeddings.float()

    def predict_batch(self, wavs, wav_lens=None):
        """Arousal, dominance and valence of a batch of waveforms.

        Each waveform is taken whole, without windows.

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
        return self._run(wavs, wav_lens)[0]

    def forward(self, wavs, wav_lens=None):
        """Runs :meth:`predict_batch`.

        Arguments
        ---------
        wavs : torch.Tensor
            As for :meth:`predict_batch`.
        wav_lens : torch.Tensor or None
            As for :meth:`predict_batch`.

        Returns
        -------
        predictions : torch.Tensor
            :meth:`predict_batch`'s.
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
        prediction : dict
            ``arousal``, ``dominance``, ``valence`` -> float.

        Raises
        ------
        DataError
            The file cannot be used (see :meth:`load_audio`), or the
            prediction is not a finite number.
        SettingsError
            ``window_seconds`` is shorter than twice the model's
            ``min_duration``.
        """
        window = self._window_samples(window_seconds)
        info, length = self._open(path)
        jobs = [(None, path, info, window_bounds(length, window))]
        ((_, prediction, _),) = self._predict_jobs(jobs, batch_size)
        problem = _prediction_problem(path, prediction)
        if problem is not None:
            raise DataError(problem)
        return dict(zip(ATTRIBUTES, prediction, strict=True))

    def predict_trajectory(
        self, path, hop_seconds, *, window_seconds=None, batch_size=BATCH_SIZE
    ):
        """Arousal, dominance and valence of a file, window by window.

        Windows of ``window_seconds`` start every ``hop_seconds``; the last
        ends at the end of the file (see :func:`hop_windows`). Each window
        gets its own prediction, as :meth:`predict_batch` of its samples.

        Arguments
        ---------
        path : str
            An audio file.
        hop_seconds : float
            Seconds between the starts of consecutive windows.
        window_seconds : float or None
            Window length; None: the model's ``window_seconds``.
        batch_size : int
            Windows per forward pass.

        Returns
        -------
        rows : list of dict
            ``start``, ``end`` (seconds), ``arousal``, ``dominance``,
            ``valence`` of each window, in order.

        Raises
        ------
        DataError
            The file cannot be used, or a window's prediction is not a finite
            number.
        SettingsError
            ``window_seconds`` is too short, or ``hop_seconds`` is not
            positive.
        """
        window = self._window_samples(window_seconds)
        hop = self._hop_samples(hop_seconds)
        info, length = self._open(path)
        rate = self.hparams.sample_rate
        bounds = hop_windows(length, window, hop)
        jobs = [
            (index, path, info, [span]) for index, span in enumerate(bounds)
        ]
        rows = []
        for index, prediction, _ in self._predict_jobs(jobs, batch_size):
            start, stop = bounds[index]
            problem = _prediction_problem(
                f"{path} ({start / rate:.2f}-{stop / rate:.2f} s)", prediction
            )
            if problem is not None:
                raise DataError(problem)
            rows.append(
                {
                    "start": start / rate,
                    "end": stop / rate,
                    **dict(zip(ATTRIBUTES, prediction, strict=True)),
                }
            )
        return rows

    def predict_files(
        self,
        paths,
        *,
        window_seconds=None,
        batch_size=BATCH_SIZE,
        progress=False,
        embeddings=False,
    ):
        """Arousal, dominance and valence of many files (needs pandas).

        A file that cannot be used gets its error instead, and the others go
        on. Windows of consecutive files share batches. The predictions are
        those of :meth:`predict_file`, up to float rounding (a window padded
        in a batch gets the same pooled embedding as alone, to about 1e-6).

        Arguments
        ---------
        paths : list of str
            Audio files; a file named twice is predicted once.
        window_seconds : float or None
            Window length for long files; None: the model's
            ``window_seconds``.
        batch_size : int
            Windows per forward pass.
        progress : bool
            Show a progress bar (tqdm, on stderr).
        embeddings : bool
            Also return each file's pooled embedding (of a long file, the
            frame-weighted mean of its windows', which the head predicts from).

        Returns
        -------
        predictions : pandas.DataFrame
            Indexed by file (as given), columns ``duration`` (seconds),
            ``arousal``, ``dominance``, ``valence`` and ``error`` (empty when
            the file was predicted; otherwise what is wrong and what to do,
            and the attributes are NaN, as is the duration of a file that
            could not be read).
        embeddings : numpy.ndarray
            With ``embeddings``: ``[files, embedding size]`` float32, a row
            per row of ``predictions``, NaN for a file not predicted.

        Raises
        ------
        SettingsError
            ``window_seconds`` is shorter than twice the model's
            ``min_duration``.
        """
        import pandas as pd

        window = self._window_samples(window_seconds)
        paths = list(dict.fromkeys(str(path) for path in paths))
        rows = {path: {"duration": math.nan, "error": ""} for path in paths}

        def jobs():
            """Yields a job per usable file, noting the errors of the others."""
            for path in tqdm(paths, disable=not progress, unit="file"):
                try:
                    info, length = self._open(path)
                except DataError as error:
                    rows[path]["error"] = str(error)
                    continue
                rows[path]["duration"] = length / self.hparams.sample_rate
                yield path, path, info, window_bounds(length, window)

        pooled = {}
        for path, prediction, embedding in self._predict_jobs(
            jobs(), batch_size, errors=rows
        ):
            problem = _prediction_problem(path, prediction)
            if problem is None:
                rows[path].update(zip(ATTRIBUTES, prediction, strict=True))
                pooled[path] = embedding
            else:
                rows[path]["error"] = problem
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame = frame.reindex(columns=["duration", *ATTRIBUTES, "error"])
        frame.index.name = "file"
        if not embeddings:
            return frame
        size = self.mods.encoder.output_size
        table = np.full((len(frame), size), np.nan, dtype=np.float32)
        for row, path in enumerate(frame.index):
            if path in pooled:
                table[row] = pooled[path].float().numpy()
        return frame, table

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

    def _hop_samples(self, hop_seconds):
        hop = round(float(hop_seconds) * self.hparams.sample_rate)
        if not hop >= 1:
            raise SettingsError(
                f"hop_seconds={hop_seconds}: choose a positive number of seconds between "
                "windows (e.g. 1)"
            )
        return hop

    def _predict_jobs(self, jobs, batch_size, errors=None):
        """Predicts each job ``(key, path, info, windows)``.

        A job's windows (``(start, stop)`` samples of its file) share batches
        with those of the jobs around it, and are read from the file only when
        their batch is run, so that at most ``batch_size`` windows are in
        memory, whatever the files' lengths. Yields ``(key, [arousal,
        dominance, valence], embedding)`` in job order as each is complete: a
        job of one window gets that window's prediction and embedding, one of
        several the frame-weighted mean of their embeddings and the head
        applied to it. With ``errors`` (key
        -> row with an ``error``), a file that cannot be read is noted there
        and left out; otherwise its DataError is raised.
        """
        queue = []  # (key, path, info, start, stop) waiting for a batch
        parts = {}  # key -> [predictions, embeddings, frames, windows left]
        unreadable = set()  # keys of files that failed to read

        def flush(batch):
            read = []  # (key, samples)
            for key, path, info, start, stop in batch:
                if key in unreadable:
                    continue
                try:
                    read.append((key, self._read(path, start, stop, info)))
                except DataError as error:
                    if errors is None:
                        raise
                    errors[key]["error"] = str(error)
                    unreadable.add(key)
                    del parts[key]
            read = [
                (key, piece) for key, piece in read if key not in unreadable
            ]
            if not read:
                return
            keys = [key for key, _ in read]
            pieces = [piece for _, piece in read]
            lengths = torch.tensor([len(piece) for piece in pieces])
            wavs = torch.nn.utils.rnn.pad_sequence(pieces, batch_first=True)
            predictions, embeddings = self._run(wavs, lengths / wavs.shape[1])
            frames = self.mods.encoder.frame_lengths(lengths).cpu()
            for key, prediction, embedding, count in zip(
                keys, predictions.cpu(), embeddings.cpu(), frames, strict=True
            ):
                found = parts[key]
                found[0].append(prediction)
                found[1].append(embedding)
                found[2].append(count)
                found[3] -= 1
                if found[3] == 0:
                    del parts[key]
                    yield (key, *self._merge(*found[:3]))

        for key, path, info, windows in jobs:
            parts[key] = [[], [], [], len(windows)]
            queue.extend(
                (key, path, info, start, stop) for start, stop in windows
            )
            while len(queue) >= batch_size:
                yield from flush(queue[:batch_size])
                del queue[:batch_size]
        if queue:
            yield from flush(queue)

    def _merge(self, predictions, embeddings, frames):
        """A file's prediction and embedding from those of its windows."""
        if len(predictions) == 1:
            return predictions[0].tolist(), embeddings[0]
        weights = torch.stack(frames).to(torch.float32)
        weights = weights / weights.sum()
        embedding = (torch.stack(embeddings) * weights.unsqueeze(1)).sum(dim=0)
        prediction = self.predict_from_embeddings(embedding.unsqueeze(0))[0]
        return prediction.tolist(), embedding


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
