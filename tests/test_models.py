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


@pytest.mark.parametrize(
    "norm, bias", [("layer", True), ("group", False), ("group", True)]
)
def test_channels_last_cnn_equals_the_transformers_cnn(norm, bias):
    from ctsl_brain.custom_interface import (
        _channels_last_layers,
        channels_last_features,
    )

    config = transformers.Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(24,) * 7,
        feat_extract_norm=norm,
        conv_bias=bias,
    )
    torch.manual_seed(0)
    cnn = transformers.Wav2Vec2Model(config).feature_extractor.eval()
    for param in cnn.parameters():  # the norms' affine parameters too
        param.data.normal_(0, 0.3)
    wavs = torch.randn(3, 8000)
    with torch.no_grad():
        expected = cnn(wavs)
        ours = channels_last_features(_channels_last_layers(cnn), wavs)
        torch.testing.assert_close(ours, expected, atol=2e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            expected16 = cnn(wavs)
            ours16 = channels_last_features(_channels_last_layers(cnn), wavs)
    assert ours16.dtype == expected16.dtype == torch.bfloat16
    # Within a few bf16 roundings of each other, and of float32.
    scale = expected.abs().max()
    assert (ours16.float() - expected16.float()).abs().max() < 0.03 * scale
    assert (ours16.float() - expected).abs().max() < 0.03 * scale


def test_only_a_frozen_cnn_runs_channels_last(model_folder):
    folder = tiny_encoder_folder(model_folder, num_layers=1)
    wavs, lens = torch.randn(2, 4000), torch.ones(2)
    frozen = SSLEncoder(Wav2Vec2, folder, save_path=folder)
    trained = SSLEncoder(
        Wav2Vec2, folder, save_path=folder, freeze_feature_extractor=False
    )
    assert "forward" in vars(frozen.ssl.model.feature_extractor)
    frozen(wavs, lens).sum().backward()
    trained(wavs, lens).sum().backward()
    cnn_weight = "feature_extractor.conv_layers.0.conv.weight"
    assert dict(frozen.ssl.model.named_parameters())[cnn_weight].grad is None
    assert (
        dict(trained.ssl.model.named_parameters())[cnn_weight].grad is not None
    )
    # The weights keep their names: checkpoints of either load in the other.
    trained.load_state_dict(frozen.state_dict())


def test_keep_mask_keeps_each_element_with_probability_one_minus_p():
    from ctsl_brain.custom_interface import keep_mask

    torch.manual_seed(0)
    for p in (0.1, 0.5):
        keep = keep_mask((401, 1001), p).float()  # an odd count: a half word
        sigma = (p * (1 - p) / keep.numel()) ** 0.5
        assert abs(1 - keep.mean().item() - p) < 5 * sigma
        # Elements drawn from the two halves of one word are independent.
        pairs = keep.flatten()[:-1].view(-1, 2)
        both = (pairs[:, 0] * pairs[:, 1]).mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * sigma * 2


def test_fast_dropout_is_dropout():
    from ctsl_brain.custom_interface import FastCPUDropout

    torch.manual_seed(0)
    x = (torch.rand(200, 500) + 0.5).requires_grad_()
    with FastCPUDropout():
        y = torch.nn.Dropout(0.2).train()(x)
        same = torch.nn.functional.dropout(x, 0.2, training=False)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / 0.8)
    assert abs(1 - kept.float().mean().item() - 0.2) < 0.01
    assert same is x
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.8)


@pytest.mark.parametrize("mask", ["bool", "additive", "none"])
def test_fast_attention_dropout_is_sdpa_with_dropout(mask):
    from ctsl_brain.custom_interface import FastCPUDropout

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 20, 8) for _ in range(3))
    attend = torch.rand(2, 1, 20, 20) > 0.3
    attend[..., 0] = True
    attn_mask = {
        "bool": attend,
        "additive": torch.where(attend, 0.0, -1e4),
        "none": None,
    }[mask]
    sdpa = torch.nn.functional.scaled_dot_product_attention
    expected = sdpa(q, k, v, attn_mask=attn_mask)
    with FastCPUDropout():
        # No dropout: PyTorch's own kernel; with: the same expectation.
        torch.testing.assert_close(sdpa(q, k, v, attn_mask=attn_mask), expected)
        draws = torch.stack(
            [
                sdpa(q, k, v, attn_mask=attn_mask, dropout_p=0.5)
                for _ in range(2000)
            ]
        )
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), expected, atol=0.06, rtol=0)


def test_a_training_encoder_draws_its_dropout_masks_fast(
    model_folder, monkeypatch
):
    import ctsl_brain.custom_interface as interface

    calls = []

    def counted(*args, **kwargs):
        calls.append(args[0])
        return keep_mask(*args, **kwargs)

    keep_mask = interface.keep_mask
    monkeypatch.setattr(interface, "keep_mask", counted)
    folder = tiny_encoder_folder(model_folder, num_layers=2)
    encoder = SSLEncoder(Wav2Vec2, folder, save_path=folder)
    wavs, lens = torch.randn(2, 4000), torch.ones(2)
    encoder.eval()(wavs, lens)
    with torch.no_grad():
        encoder.train()(wavs, lens)
    assert calls == []
    encoder.train()(wavs, lens)
    # Per layer: the attention weights, the feed-forward's two, the residual's.
    shapes = {len(shape) for shape in calls}
    assert shapes == {3, 4} and len(calls) >= 2 * 4
