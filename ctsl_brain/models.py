"""The SER model of the paper (section 3.2): SSL encoder, pooling, regression.

The model is an SSL encoder, mean pooling and a regression head. The encoder
comes through SpeechBrain's Hugging Face integration, so ``source`` is a hub id
or a local folder (``config.json``, weights, ``preprocessor_config.json``). On
top of it this module adds what the paper needs and the integration lacks:
pruning of the top transformer layers, waveform normalisation over each
utterance's own samples, and mean pooling over valid frames only, so that an
utterance gets the same embedding alone or padded in a batch.
"""

import hashlib
import json
import os
import shutil
import tempfile

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain.dataio.dataio import length_to_mask

from .dataio import MissingInputError, SettingsError

__all__ = [
    "SSLEncoder",
    "RegressionHead",
    "TeacherEmbeddingCache",
    "masked_mean",
    "load_encoder",
    "tiny_encoder_folder",
]


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
    mask = length_to_mask(
        lengths, frames.shape[1], frames.dtype, frames.device
    ).unsqueeze(-1)
    return (frames * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)


class SSLEncoder(torch.nn.Module):
    """A self-supervised speech encoder with mean pooling.

    Waveform in, utterance embedding out.

    Arguments
    ---------
    hf_class : callable
        SpeechBrain's wrapper class, e.g.
        ``speechbrain.integrations.huggingface.Wav2Vec2`` (``WavLM`` and
        ``HuBERT`` work the same way).
    source : str
        Hub id or local folder of the pretrained model.
    save_path : str
        Where hub downloads are cached.
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

    Raises
    ------
    ctsl_brain.dataio.MissingInputError
        ``source`` cannot be loaded (no such hub id or folder, or no network).
    ctsl_brain.dataio.SettingsError
        ``num_layers`` is not between 1 and the encoder's layer count.

    Example
    -------
    >>> from speechbrain.integrations.huggingface import Wav2Vec2
    >>> folder = tiny_encoder_folder(getfixture("tmp_path"))
    >>> encoder = SSLEncoder(Wav2Vec2, folder, save_path=folder, num_layers=1)
    >>> encoder(torch.randn(2, 16000), torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 32])
    """

    def __init__(
        self,
        hf_class,
        source,
        save_path,
        *,
        num_layers=None,
        freeze=False,
        freeze_feature_extractor=True,
        pretrained=True,
    ):
        super().__init__()
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
        with torch.set_grad_enabled(
            torch.is_grad_enabled() and not self.freeze
        ):
            num_samples = torch.round(wav_lens * wavs.shape[1]).long()
            if self.normalize_wav:
                wavs = normalize_waveforms(wavs, num_samples)
            frames = self.ssl(wavs, wav_lens)
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
    mask = length_to_mask(num_samples, wavs.shape[1], wavs.dtype, wavs.device)
    count = num_samples.clamp_min(1).unsqueeze(1).to(wavs.dtype)
    mean = (wavs * mask).sum(dim=1, keepdim=True) / count
    var = ((wavs - mean).pow(2) * mask).sum(dim=1, keepdim=True) / count
    return (wavs - mean) / torch.sqrt(var + eps) * mask


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


# The recipe's folder: where train.py and hparams/ are.
RECIPE_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encoder_hparams_path(path):
    """Finds an encoder file: relative paths are the recipe's, as in the YAMLs.

    A relative path is looked up in the recipe's folder (where ``train.py``
    is) first, so that the YAMLs' ``hparams/encoders/...`` work from any
    current folder, and then in the current folder, for a user's own file
    given on the command line.

    Arguments
    ---------
    path : str
        Absolute, or relative to the recipe's folder or to the current folder.

    Returns
    -------
    found : str
        The path of the existing file.

    Raises
    ------
    MissingInputError
        No such file in either place; the message names both.

    Example
    -------
    >>> os.path.isfile(
    ...     encoder_hparams_path("hparams/encoders/tiny_wav2vec2.yaml")
    ... )
    True
    """
    path = str(path)
    candidates = (
        [path]
        if os.path.isabs(path)
        else [os.path.join(RECIPE_FOLDER, path), path]
    )
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise MissingInputError(
        f"encoder_hparams: no file {path!r} (looked in {' and '.join(candidates)}); choose one "
        "of hparams/encoders/ or give the path of your own encoder file"
    )


def load_encoder(
    hparams_file, *, save_path, source=None, num_layers=None, freeze=False
):
    """Builds the encoder described by one file of ``hparams/encoders/``.

    The recipe's YAML calls this with ``!apply`` so that the encoder is
    swapped by one override
    (``--encoder_hparams hparams/encoders/wavlm_large.yaml``).

    Arguments
    ---------
    hparams_file : str
        Path of the encoder's YAML (a relative one is found as
        :func:`encoder_hparams_path` says); it must define ``encoder`` and
        take the keys ``save_path``, ``freeze``, ``source`` and
        ``num_layers``.
    save_path : str
        Cache folder for downloaded or generated encoder files.
    source : str or None
        Hub id or local folder replacing the file's own ``source``; None keeps
        the file's.
    num_layers : int or None
        Transformer layers kept, replacing the file's ``num_layers``; None
        keeps the file's.
    freeze : bool
        Freeze the whole encoder (see :class:`SSLEncoder`).

    Returns
    -------
    encoder : SSLEncoder
        The encoder the file defines.

    Raises
    ------
    MissingInputError
        There is no such file (see :func:`encoder_hparams_path`), or its
        source cannot be loaded.
    """
    hparams_file = encoder_hparams_path(hparams_file)
    overrides = {"save_path": str(save_path), "freeze": freeze}
    if source is not None:
        overrides["source"] = str(source)
    if num_layers is not None:
        overrides["num_layers"] = int(num_layers)
    with open(hparams_file) as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    return hparams["encoder"]


_TINY_FAMILIES = {
    # model type: (config class, model class) in transformers
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "hubert": ("HubertConfig", "HubertModel"),
}


def tiny_encoder_folder(
    save_path,
    *,
    model_type="wav2vec2",
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    conv_channels=32,
    seed=0,
):
    """Writes (once) a small randomly initialised encoder as a local folder.

    The demo and the tests use it in place of a hub download: it is loaded
    through exactly the path a real encoder takes (``source`` = a local
    folder). Its shape follows wav2vec2-large-robust's: the seven-layer CNN
    with layer norm and the stable-layer-norm transformer with a final layer
    norm, at a fraction of the width.

    Arguments
    ---------
    save_path : str
        Parent folder; the model goes into a subfolder named after its
        settings.
    model_type : str
        ``wav2vec2``, ``wavlm`` or ``hubert``.
    hidden_size : int
        Width of the transformer (its embedding size).
    num_layers : int
        Transformer layers.
    num_heads : int
        Attention heads of each transformer layer.
    conv_channels : int
        Channels of each of the CNN's seven layers.
    seed : int
        Seed of the random initialisation: the same settings give the same
        weights.

    Returns
    -------
    folder : str
        The model folder.

    Raises
    ------
    ValueError
        ``model_type`` is not one of the three above.

    Example
    -------
    >>> folder = tiny_encoder_folder(getfixture("tmp_path"), num_layers=1)
    >>> sorted(os.listdir(folder))[:2]
    ['config.json', 'model.safetensors']
    """
    import transformers

    if model_type not in _TINY_FAMILIES:
        raise ValueError(
            f"model_type must be one of {sorted(_TINY_FAMILIES)}, got {model_type!r}"
        )
    settings = dict(
        model_type=model_type,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        conv_channels=conv_channels,
        seed=seed,
    )
    digest = hashlib.sha1(
        json.dumps(settings, sort_keys=True).encode()
    ).hexdigest()[:10]
    folder = os.path.join(str(save_path), f"tiny_{model_type}_{digest}")
    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder

    config_class, model_class = (
        getattr(transformers, n) for n in _TINY_FAMILIES[model_type]
    )
    config = config_class(
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        conv_dim=(conv_channels,) * 7,
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        layerdrop=0.0,
        mask_time_prob=0.0,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    os.makedirs(str(save_path), exist_ok=True)
    # Written to a temporary folder and renamed, so a half-written model is
    # never picked up.
    staging = tempfile.mkdtemp(dir=str(save_path), prefix=".tiny_")
    model.save_pretrained(staging)
    extractor.save_pretrained(staging)
    try:
        os.replace(staging, folder)
    except OSError:
        # Another process of a distributed run got there first with the same
        # weights.
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.isfile(os.path.join(folder, "config.json")):
            raise
    return folder


class TeacherEmbeddingCache:
    """The frozen teacher's pooled embeddings by utterance ID, computed once.

    The teacher is in eval mode, never updated, and hears the same clean audio
    every epoch, so its embedding of an utterance is a constant: computing it
    once saves a teacher forward pass per step from the second epoch on.
    Entries are float32 on the teacher's device (1024 floats, 4 KiB, per
    utterance for the large encoders). A batch with any utterance not yet
    cached is embedded whole; utterances already cached keep their first
    embedding, which differs from a recomputation in another batch only by
    padding round-off (masked pooling).

    Only valid while the teacher's input does not change between epochs: with
    augmentation of the clean audio, turn the cache off.

    Arguments
    ---------
    teacher : torch.nn.Module
        Maps ``(wavs, wav_lens)`` to pooled embeddings ``[batch, dim]``.

    Example
    -------
    >>> teacher = lambda wavs, lens: wavs[:, :2] * 2
    >>> cache = TeacherEmbeddingCache(teacher)
    >>> cache(["a", "b"], torch.ones(2, 3), torch.ones(2)).tolist()
    [[2.0, 2.0], [2.0, 2.0]]
    >>> cache(
    ...     ["b"], torch.zeros(1, 3), torch.ones(1)
    ... ).tolist()  # cached, not recomputed
    [[2.0, 2.0]]
    >>> len(cache), cache.nbytes
    (2, 16)
    """

    def __init__(self, teacher):
        self.teacher = teacher
        self.store = {}

    def __len__(self):
        """Number of utterances cached."""
        return len(self.store)

    @property
    def nbytes(self):
        """Memory held by the cached embeddings, in bytes.

        Returns
        -------
        nbytes : int
            Bytes of the stored tensors' elements.
        """
        return sum(
            value.numel() * value.element_size()
            for value in self.store.values()
        )

    @torch.no_grad()
    def __call__(self, ids, wavs, wav_lens):
        """Embeddings of the utterances ``ids``, from the cache when present.

        Arguments
        ---------
        ids : list of str
            Utterance IDs of the batch.
        wavs : torch.Tensor
            ``[batch, samples]`` clean waveforms, embedded by the teacher when
            an utterance is not cached yet.
        wav_lens : torch.Tensor
            ``[batch]`` relative lengths.

        Returns
        -------
        embeddings : torch.Tensor
            ``[batch, dim]`` float32, in the order of ``ids``.
        """
        if any(utt_id not in self.store for utt_id in ids):
            embeddings = self.teacher(wavs, wav_lens).float()
            for utt_id, embedding in zip(ids, embeddings, strict=True):
                if utt_id not in self.store:
                    self.store[utt_id] = embedding.detach().clone()
        return torch.stack([self.store[utt_id] for utt_id in ids])
