"""The SER model of the paper (section 3.2): a pruned SSL encoder, mean pooling over valid
frames and a regression head, as the recipe builds them (encoder files, tiny demo encoders),
and the teacher's embedding cache.
"""

import hashlib
import json
import os
import shutil
import tempfile

import torch
from hyperpyyaml import load_hyperpyyaml

from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from .custom_interface import (
    RegressionHead,
    SSLEncoder,
    masked_mean,
    normalize_waveforms,
)
from .dataio import MissingInputError

__all__ = [
    "SSLEncoder",
    "RegressionHead",
    "TeacherEmbeddingCache",
    "masked_mean",
    "normalize_waveforms",
    "load_encoder",
    "tiny_encoder_folder",
]


# The recipe's folder: where train.py and hparams/ are.
RECIPE_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def encoder_hparams_path(path):
    """Finds an encoder file: a relative path is looked up in the recipe's
    folder (where ``train.py`` is), then in the current folder.

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

    The demo and the tests load it as a real encoder is loaded (``source`` =
    a local folder); it has wav2vec2-large-robust's shape at a fraction of its
    width.

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


@register_checkpoint_hooks
class TeacherEmbeddingCache:
    """The frozen teacher's pooled embeddings by utterance ID, computed once.

    The frozen teacher hears the same clean audio every epoch, so each
    embedding is computed in the first epoch only (float32, on the teacher's
    device). A batch with any utterance not yet cached is embedded whole;
    cached ones keep their first embedding. With augmentation of the clean
    audio, turn the cache off. As a checkpoint recoverable, it is saved with
    each checkpoint, so that a resumed run uses the embeddings the first
    epoch computed (an embedding computed in another batch can differ in its
    last bits).

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
        return torch.stack(
            [self.store[utt_id].to(wavs.device) for utt_id in ids]
        )

    @mark_as_saver
    def save(self, path):
        """Saves the cached embeddings (IDs and one float32 tensor).

        Arguments
        ---------
        path : str or pathlib.Path
            The checkpoint's file.
        """
        ids = list(self.store)
        embeddings = (
            torch.stack([self.store[utt_id].cpu() for utt_id in ids])
            if ids
            else torch.empty(0)
        )
        torch.save({"ids": ids, "embeddings": embeddings}, path)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        """Replaces the cache with saved embeddings (kept on the CPU).

        Arguments
        ---------
        path : str or pathlib.Path
            The checkpoint's file.
        end_of_epoch : bool
            Whether the checkpoint was saved at the end of an epoch (either
            way the same).
        """
        del end_of_epoch  # the same either way
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.store = dict(
            zip(saved["ids"], saved["embeddings"].unbind(0), strict=True)
        )
