"""The model card (``README.md``) of an exported model, read from its run's
``hyperparams.yaml``, ``evaluation.json`` and ``predictions.csv``.
"""

import json
import os

import pandas as pd
import torch

from ..dataio import ATTRIBUTES, SILENCE_PEAK
from ..losses import concordance_cc
from ..models import encoder_hparams_path

__all__ = ["model_card", "ENCODER_LICENCES"]

# The licence of the pretrained encoders of hparams/encoders/, as their Hugging
# Face model cards give it.
ENCODER_LICENCES = {
    "facebook/wav2vec2-large-robust": "Apache-2.0, per its model card",
    "facebook/hubert-large-ll60k": "Apache-2.0, per its model card",
    "microsoft/wavlm-large": "MIT, as its authors released it (microsoft/unilm); its "
    "model card names none",
}
# What the Hub reads of each corpus: its language and dataset name.
CORPUS_HUB = {"msp_podcast": {"language": "en", "dataset": "MSP-Podcast"}}
# The SpeechBrain release the exported code is tested with, the oldest it needs.
MIN_SPEECHBRAIN = "1.1.2"

_SYSTEMS = {
    # (lambda_tl > 0, lambda_cl > 0, frozen encoder) -> the paper's name
    (True, True, False): ("RM+TL+CL", "the method of the paper"),
    (True, False, False): ("RM+TL", "the transfer loss without contrast"),
    (False, True, False): ("RM+CL", "the contrastive loss without transfer"),
    (False, False, False): ("RM", "the whole model retrained on noisy speech"),
    (False, False, True): ("RH", "the head alone retrained on noisy speech"),
}


def _system(settings):
    """The run's system: the paper's name, a description, and if a student."""
    if not settings.get("teacher_folder"):
        return "Original", "the teacher, fine-tuned on clean speech", False
    key = (
        float(settings.get("lambda_tl") or 0) > 0,
        float(settings.get("lambda_cl") or 0) > 0,
        bool(settings.get("freeze_encoder")),
    )
    name, what = _SYSTEMS.get(key, ("student", "a student with other settings"))
    if settings.get("field_folder"):
        name += " (field)"
        what += (
            ", adapted from the stretches without speech of field recordings "
            f"({settings['field_folder']})"
        )
    return name, what, True


def test_table(run_folder, epoch):
    """CCC per test condition and attribute of one checkpoint, from the run.

    Arguments
    ---------
    run_folder : str
        The run's ``output_folder``.
    epoch : int
        The checkpoint (``checkpoint`` column of ``predictions.csv``).

    Returns
    -------
    table : pandas.DataFrame or None
        Indexed by condition; columns ``utterances`` and the attributes'
        CCC; and ``ranges``, the smallest and largest prediction of each
        attribute over all conditions. None when the run has no
        ``predictions.csv`` rows of that checkpoint (not evaluated).
    """
    path = os.path.join(run_folder, "predictions.csv")
    if not os.path.isfile(path):
        return None
    rows = pd.read_csv(path)
    rows = rows[rows["checkpoint"] == epoch]
    if rows.empty:
        return None
    found = {}
    for condition, group in rows.groupby("condition", sort=False):
        predicted = torch.tensor(
            group[[f"{name}_pred" for name in ATTRIBUTES]].to_numpy(float)
        )
        true = torch.tensor(
            group[[f"{name}_true" for name in ATTRIBUTES]].to_numpy(float)
        )
        ccc = concordance_cc(predicted, true).tolist()
        found[condition] = {
            "utterances": len(group),
            **dict(zip(ATTRIBUTES, ccc, strict=False)),
        }
    table = pd.DataFrame.from_dict(found, orient="index")
    table.attrs["ranges"] = {
        name: (rows[f"{name}_pred"].min(), rows[f"{name}_pred"].max())
        for name in ATTRIBUTES
    }
    return table


def model_card(
    run_folder, settings, *, epoch, dev_ccc, encoder, window_seconds, onnx
):
    """The text of an exported model's ``README.md``.

    Arguments
    ---------
    run_folder : str
        The run's ``output_folder``.
    settings : dict
        The run's settings (``ctsl_brain.deployment.export.run_settings``).
    epoch : int
        The exported checkpoint's epoch.
    dev_ccc : float
        Its mean dev CCC.
    encoder : ctsl_brain.custom_interface.SSLEncoder
        The run's encoder, as rebuilt for the export.
    window_seconds : float
        The exported model's window for long files.
    onnx : list of str
        The ONNX files exported with it.

    Returns
    -------
    text : str
        Markdown.
    """
    system, what, student = _system(settings)
    config = encoder.ssl.model.config
    source = settings.get("encoder_source") or _file_source(
        settings["encoder_hparams"]
    )
    low, high = float(settings["label_min"]), float(settings["label_max"])
    corpus = settings.get("corpus", "?")
    table = test_table(run_folder, epoch)
    evaluated = _evaluated_epochs(run_folder)
    title = f"Speech emotion regression ({system}, {corpus})"
    lines = [
        *_front_matter(title, corpus, table),
        "",
        f"# {title}",
        "",
        "Arousal, dominance and valence of a recording, as numbers on the "
        f"{low:g}-{high:g} scale of the training labels. Trained with the recipe "
        "*Noise-robust speech emotion recognition by contrastive teacher-student "
        "learning* (Leem et al., ICASSP 2023), a SpeechBrain recipe.",
        "",
        "## The model",
        "",
        f"- **Encoder**: `{source}` ({config.model_type}), the bottom "
        f"{config.num_hidden_layers} transformer layers kept, embedding size "
        f"{config.hidden_size}; waveforms normalised per utterance where the encoder "
        "asks for it; mean pooling over the valid frames.",
        f"- **Head**: {settings['head_hidden_layers']} hidden layer(s) of "
        f"{settings['head_hidden_size']} units (Linear, LayerNorm, ReLU, dropout "
        f"{settings['head_dropout']}), then a Linear layer to 3 outputs, trained on "
        f"(y - {low:g}) / ({high:g} - {low:g}) and mapped back to the label scale.",
        f"- **System**: {system}, {what}.",
    ]
    if student:
        lines.append(
            f"  A student: a copy of the teacher retrained on speech mixed with the "
            f"target noise at {settings.get('adapt_snr')} dB, with "
            f"lambda_TL = {settings.get('lambda_tl')} and lambda_CL = "
            f"{settings.get('lambda_cl')}, against the frozen teacher's embeddings "
            "of the clean speech."
        )
    lines += [
        f"- **Checkpoint**: epoch {epoch}"
        + (
            f" of {settings['number_of_epochs']}"
            if settings.get("number_of_epochs")
            else ""
        )
        + f", mean dev CCC {dev_ccc:.4f}"
        + (
            "; the best of the run's evaluated checkpoints."
            if evaluated and evaluated[0] == epoch
            else "."
        ),
        f"- **Exported from**: `{os.path.abspath(run_folder)}`.",
        "",
        "## Training data",
        "",
        f"Corpus `{corpus}` (the run's manifests: "
        f"`{settings.get('train_annotation', '?')}`, "
        f"`{settings.get('dev_annotation', '?')}`), labels on {low:g}-{high:g}"
        + (
            "; MSP-Podcast's consensus labels EmoAct, EmoDom, EmoVal."
            if corpus == "msp_podcast"
            else "."
        ),
        "",
        "## Test results",
        "",
    ]
    if table is None:
        lines.append(
            "This checkpoint was not evaluated on the test set by its run (see "
            "`evaluation.json` of the run for those that were)."
        )
    else:
        lines += [
            "Concordance correlation coefficient (CCC) on the run's test set, per "
            "condition, of this checkpoint (from the run's `predictions.csv`):",
            "",
            "| condition | utterances | arousal | dominance | valence |",
            "|:---|---:|---:|---:|---:|",
        ]
        for condition, row in table.iterrows():
            lines.append(
                f"| {condition} | {row['utterances']:.0f} | "
                + " | ".join(f"{row[name]:.3f}" for name in ATTRIBUTES)
                + " |"
            )
    lines += [
        "",
        "## What the numbers mean",
        "",
        f"Each output is on the {low:g}-{high:g} scale of the training labels "
        f"({low:g}: very low arousal, dominance or valence; {high:g}: very high). "
        "The head's last layer is linear, so **a prediction can leave the scale**: "
        "nothing bounds it.",
    ]
    if table is not None:
        ranges = table.attrs["ranges"]
        spans = ", ".join(
            f"{name} {ranges[name][0]:.2f} to {ranges[name][1]:.2f}"
            for name in ATTRIBUTES
        )
        outside = any(
            ranges[name][0] < low or ranges[name][1] > high
            for name in ATTRIBUTES
        )
        lines.append(
            f"On the run's test set its predictions spanned {spans}"
            + (
                ", outside the scale in places."
                if outside
                else ", within the scale."
            )
        )
    lines += [
        "To keep them on the scale, load the model with "
        '`overrides={"clip_to_scale": True}` (or `predict --clip`). To map them '
        f"to [0, 1], use (y - {low:g}) / ({high:g} - {low:g}); to another scale "
        "[a, b], a + (b - a) (y - "
        f"{low:g}) / ({high:g} - {low:g}).",
        "",
        "## Input",
        "",
        f"- Any sample rate and channel count: channels are averaged and the audio "
        f"resampled to {settings['sample_rate']} Hz, as in training.",
        f"- **Long recordings** are cut into the fewest equal windows of at most "
        f"{window_seconds:g} s (`window_seconds`, at least the longest utterance of "
        "the training data); the windows' embeddings are averaged over their frames "
        "and the head applied to that. `predict --hop SECONDS` gives a time series "
        "of window predictions instead.",
        f"- **Silence** (peak below {SILENCE_PEAK:g} of full scale), **input shorter "
        f"than {settings['min_duration']} s**, empty, truncated or unreadable files "
        "and files with NaN or infinite samples are refused with an error that names "
        "the file, as in training; a prediction is a number or an error, never NaN. "
        "Quiet speech is not refused, but the model was trained on speech: a "
        "recording without speech still gets numbers, and they mean nothing.",
        "",
        "## Licences",
        "",
        f"- The encoder `{source}`: "
        + (
            f"{ENCODER_LICENCES[source]}."
            if source in ENCODER_LICENCES
            else "see its model card."
        ),
        "- The training data: "
        + (
            "MSP-Podcast is distributed by The University of Texas at Dallas under "
            "an academic licence agreement; check that it allows your use of a model "
            "trained on it."
            if corpus == "msp_podcast"
            else "check the licence of the corpus the run was trained on."
        ),
        "- This code (`custom_interface.py`) and the recipe: Apache-2.0.",
        "",
        "## Usage",
        "",
        "With SpeechBrain (speechbrain, torch and transformers installed; nothing "
        "else of the recipe is needed):",
        "",
        "```python",
        "from speechbrain.inference.interfaces import foreign_class",
        "",
        "model = foreign_class(",
        '    source="<this folder, or its model hub id>",',
        '    pymodule_file="custom_interface.py",',
        '    classname="EmotionRegressor",',
        ")",
        'model.predict_file("speech.wav")  # {"arousal": ..., "dominance": ..., "valence": ...}',
        'model.predict_trajectory("call.wav", hop_seconds=1.0)  # windows of a long file',
        "model.predict_batch(wavs, wav_lens)  # [batch, 3], waveforms at "
        f"{settings['sample_rate']} Hz",
        "```",
        "",
        "From the command line of the recipe:",
        "",
        "```bash",
        "python -m ctsl_brain predict --model <this folder> recordings/ --out predictions.csv",
        "python -m ctsl_brain predict --model <this folder> call.wav --out call.csv --hop 1 --plot",
        "```",
    ]
    if onnx:
        lines += [
            "",
            "With onnxruntime alone (no PyTorch): "
            + ", ".join(f"`{name}`" for name in onnx)
            + " take `wavs` (`[batch, samples]` float32 at "
            f"{settings['sample_rate']} Hz, zero-padded) and `wav_lens` (`[batch]`, "
            "lengths relative to `samples`) and give `predictions` (`[batch, 3]`: "
            "arousal, dominance, valence on the label scale) and `embedding` (the "
            "pooled embedding). Batch and length are dynamic; padding is masked as in "
            "PyTorch. `model.int8.onnx` has int8 weights in the encoder's matrix "
            "products (dynamic quantisation): faster on CPUs, a little less exact.",
            "",
            "```python",
            "import numpy as np, onnxruntime, soundfile",
            "",
            'session = onnxruntime.InferenceSession("model.onnx")',
            'wav, rate = soundfile.read("speech.wav", dtype="float32")  # mono, '
            f"{settings['sample_rate']} Hz",
            "predictions, embedding = session.run(",
            '    None, {"wavs": wav[None], "wav_lens": np.ones(1, np.float32)}',
            ")",
            "```",
            "",
            "`python -m ctsl_brain predict --backend onnx [--int8]` runs them with the "
            "same windows and checks as PyTorch.",
        ]
    lines += [
        "",
        "## Files",
        "",
        "| file | content |",
        "|:---|:---|",
        "| `hyperparams.yaml` | the model: encoder configuration, head, label scale, "
        "window |",
        "| `encoder.ckpt`, `head.ckpt` | the weights of the checkpoint |",
        "| `custom_interface.py` | the code: `EmotionRegressor`, the encoder and head "
        "classes, audio reading and checks |",
    ]
    lines += [f"| `{name}` | the ONNX model |" for name in onnx]
    lines.append("")
    return "\n".join(lines)


def _front_matter(title, corpus, table):
    """The card's YAML header: what the Hugging Face Hub reads.

    Arguments
    ---------
    title : str
        The model's name in the model index.
    corpus : str
        The run's corpus.
    table : pandas.DataFrame or None
        From :func:`test_table`: its CCCs become the model index's metrics.

    Returns
    -------
    lines : list of str
        From ``---`` to ``---``.
    """
    import yaml

    hub = CORPUS_HUB.get(corpus, {})
    header = {
        "library_name": "speechbrain",
        "license": "apache-2.0",
        "tags": [
            "speech-emotion-recognition",
            "audio-regression",
            "speechbrain",
        ],
        # A foreign_class model: no hosted widget can run it.
        "inference": False,
        "min_speechbrain_version": MIN_SPEECHBRAIN,
    }
    if "language" in hub:
        header["language"] = [hub["language"]]
        header["datasets"] = [hub["dataset"]]
    if table is not None:
        header["model-index"] = [
            {
                "name": title,
                "results": [
                    {
                        "task": {
                            "type": "audio-classification",
                            "name": "Speech emotion regression",
                        },
                        "dataset": {
                            "type": corpus,
                            "name": f"{hub.get('dataset', corpus)} test ({condition})",
                            "split": "test",
                            "config": str(condition),
                        },
                        "metrics": [
                            {
                                "type": "ccc",
                                "name": f"CCC {name}",
                                "value": round(float(row[name]), 4),
                            }
                            for name in ATTRIBUTES
                        ],
                    }
                    for condition, row in table.iterrows()
                ],
            }
        ]
    text = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return ["---", *text.rstrip("\n").splitlines(), "---"]


def _evaluated_epochs(run_folder):
    """The epochs of the run's evaluation.json, best first ([] if none)."""
    path = os.path.join(run_folder, "evaluation.json")
    if not os.path.isfile(path):
        return []
    with open(path) as fin:
        return [item["epoch"] for item in json.load(fin)["checkpoints"]]


def _file_source(encoder_hparams):
    """The ``source`` of an encoder file of hparams/encoders/, as written."""
    try:
        with open(encoder_hparams_path(encoder_hparams)) as fin:
            for line in fin:
                if line.startswith("source:"):
                    value = line.split(":", 1)[1].split("#")[0].strip()
                    if not value.startswith("!"):
                        return value
    except OSError:
        pass
    return f"the encoder of {encoder_hparams} (a generated random encoder)"
