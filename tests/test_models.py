"""Encoder loading, pruning, normalisation, pooling and head, on tiny local encoders."""

import numpy as np
import pytest
import torch
import transformers
from ctsl_brain.models import (
    RegressionHead,
    SSLEncoder,
    load_encoder,
    masked_mean,
    tiny_encoder_folder,
)

from speechbrain.integrations.huggingface import Wav2Vec2

FAMILIES = ["wav2vec2", "wavlm", "hubert"]


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("encoders")


def test_masked_mean_ignores_padding():
    frames = torch.randn(2, 5, 3)
    padded = frames.clone()
    padded[0, 3:] = 1e6
    pooled = masked_mean(padded, torch.tensor([3, 5]))
    torch.testing.assert_close(pooled[0], frames[0, :3].mean(dim=0))
    torch.testing.assert_close(pooled[1], frames[1].mean(dim=0))


@pytest.mark.parametrize("family", FAMILIES)
def test_embedding_alone_equals_embedding_padded_in_a_batch(
    model_folder, family
):
    encoder = load_encoder(
        f"hparams/encoders/tiny_{family}.yaml", save_path=str(model_folder)
    ).eval()
    generator = torch.Generator().manual_seed(0)
    lengths = [16000, 9601, 4321]
    wavs = torch.zeros(3, 16000)
    for i, n in enumerate(lengths):
        wavs[i, :n] = torch.randn(n, generator=generator) * (i + 1)
    with torch.no_grad():
        batch = encoder(wavs, torch.tensor(lengths) / 16000)
        for i, n in enumerate(lengths):
            alone = encoder(wavs[i : i + 1, :n], torch.ones(1))
            torch.testing.assert_close(batch[i], alone[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_encoder_equals_full_encoder_with_top_layers_deleted(
    model_folder, family
):
    folder = tiny_encoder_folder(
        model_folder, model_type=family, num_layers=4, seed=3
    )
    hf_class = {"wav2vec2": "Wav2Vec2", "wavlm": "WavLM", "hubert": "HuBERT"}[
        family
    ]
    import speechbrain.integrations.huggingface as sb_hf

    pruned = SSLEncoder(
        getattr(sb_hf, hf_class), folder, save_path=folder, num_layers=2
    ).eval()
    assert len(pruned.ssl.model.encoder.layers) == 2

    # Reference: the full model straight from transformers, its top two layers deleted, fed
    # with inputs normalised by the model's own feature extractor, one utterance at a time.
    full = transformers.AutoModel.from_pretrained(folder).eval()
    assert len(full.encoder.layers) == 4
    del full.encoder.layers[2:]
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder)
    rng = np.random.default_rng(1)
    utterances = [
        rng.normal(0, 0.3, n).astype(np.float32) + 0.1 for n in (12000, 7000)
    ]

    wavs = torch.zeros(2, 12000)
    for i, u in enumerate(utterances):
        wavs[i, : len(u)] = torch.from_numpy(u)
    with torch.no_grad():
        ours = pruned(wavs, torch.tensor([1.0, 7000 / 12000]))
        for i, u in enumerate(utterances):
            inputs = extractor(u, sampling_rate=16000, return_tensors="pt")
            expected = full(inputs.input_values).last_hidden_state.mean(dim=1)[
                0
            ]
            torch.testing.assert_close(ours[i], expected, atol=2e-5, rtol=1e-4)


def test_pruning_keeps_the_final_layer_norm(model_folder):
    folder = tiny_encoder_folder(model_folder, num_layers=3)
    encoder = SSLEncoder(Wav2Vec2, folder, save_path=folder, num_layers=1)
    assert encoder.ssl.model.config.do_stable_layer_norm
    assert isinstance(encoder.ssl.model.encoder.layer_norm, torch.nn.LayerNorm)
    assert encoder.ssl.model.config.num_hidden_layers == 1


def test_too_many_layers_is_a_clear_error(model_folder):
    folder = tiny_encoder_folder(model_folder, num_layers=2)
    with pytest.raises(ValueError, match="num_layers=5.*2 transformer layers"):
        SSLEncoder(Wav2Vec2, folder, save_path=folder, num_layers=5)


def test_feature_extractor_is_frozen_and_transformer_trains(model_folder):
    folder = tiny_encoder_folder(model_folder)
    encoder = SSLEncoder(
        Wav2Vec2, folder, save_path=folder, freeze_feature_extractor=True
    )
    cnn = encoder.ssl.model.feature_extractor
    assert not any(p.requires_grad for p in cnn.parameters())
    assert all(p.requires_grad for p in encoder.ssl.model.encoder.parameters())
    encoder(torch.randn(2, 8000), torch.ones(2)).sum().backward()
    assert all(p.grad is None for p in cnn.parameters())
    assert (
        encoder.ssl.model.encoder.layers[0].attention.k_proj.weight.grad
        is not None
    )


def test_frozen_encoder_stays_in_eval_mode_and_has_no_gradient(model_folder):
    folder = tiny_encoder_folder(model_folder)
    encoder = SSLEncoder(Wav2Vec2, folder, save_path=folder, freeze=True)
    encoder.train()
    assert not encoder.training and not encoder.ssl.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder(torch.randn(1, 8000), torch.ones(1)).requires_grad


@pytest.mark.parametrize("family", ["wavlm", "hubert"])
def test_other_families_load_through_the_same_path(model_folder, family):
    encoder = load_encoder(
        f"hparams/encoders/tiny_{family}.yaml", save_path=str(model_folder)
    )
    expected = {
        "wavlm": transformers.WavLMModel,
        "hubert": transformers.HubertModel,
    }[family]
    assert isinstance(encoder.ssl.model, expected)
    assert encoder(torch.randn(2, 8000), torch.ones(2)).shape == (
        2,
        encoder.output_size,
    )


def test_source_override_and_missing_file(model_folder):
    folder = tiny_encoder_folder(model_folder, hidden_size=48, num_heads=4)
    encoder = load_encoder(
        "hparams/encoders/tiny_wav2vec2.yaml",
        save_path=str(model_folder),
        source=folder,
    )
    assert encoder.output_size == 48
    pruned = load_encoder(
        "hparams/encoders/tiny_wav2vec2.yaml",
        save_path=str(model_folder),
        num_layers=1,
    )
    assert len(pruned.ssl.model.encoder.layers) == 1
    with pytest.raises(FileNotFoundError, match="encoder_hparams"):
        load_encoder("hparams/encoders/nope.yaml", save_path=str(model_folder))


def test_tiny_encoder_is_deterministic(tmp_path):
    first = tiny_encoder_folder(tmp_path / "a", seed=7)
    second = tiny_encoder_folder(tmp_path / "b", seed=7)
    a = transformers.AutoModel.from_pretrained(first).state_dict()
    b = transformers.AutoModel.from_pretrained(second).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_head_follows_the_paper():
    head = RegressionHead(32, hidden_size=16, num_hidden_layers=2, dropout=0.5)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "LayerNorm", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert head[0].in_features == 32 and head[-1].out_features == 3
    assert head[3].p == 0.5
    one = RegressionHead(32, hidden_size=16, num_hidden_layers=1)
    assert len(one) == 5
