"""What a finished run leaves for the study: per-utterance predictions, dev embeddings, test
results and, written last, ``evaluation.json``.
"""

import io
import json
import os

import torch

from .dataio import (
    ATTRIBUTES,
    remove_stale_staging,
    write_bytes_atomic,
    write_csv_atomic,
    write_text_atomic,
)

__all__ = ["PREDICTION_COLUMNS", "write_evaluation"]

# predictions.csv: one row per utterance, test condition and evaluated checkpoint (its epoch).
PREDICTION_COLUMNS = (
    "ID",
    "condition",
    "checkpoint",
    *(f"{name}_{kind}" for kind in ("pred", "true") for name in ATTRIBUTES),
)


def write_evaluation(output_folder, *, rows, embedded, test_results, summary):
    """Writes a run's evaluation into its folder.

    Arguments
    ---------
    output_folder : str
        The run's folder.
    rows : list of list
        Rows of ``predictions.csv`` (see :data:`PREDICTION_COLUMNS`).
    embedded : dict
        Dev condition -> ``{"ids", "embeddings", "labels"}``, saved as
        ``embeddings/dev_<condition>.pt``.
    test_results : dict
        Test condition -> statistics of the best checkpoint, saved as ``test_results.json``.
    summary : dict
        Saved as ``evaluation.json`` (the evaluated checkpoints and conditions), last.
    """
    evaluation_path = os.path.join(output_folder, "evaluation.json")
    if os.path.exists(evaluation_path):
        os.remove(evaluation_path)
    write_csv_atomic(
        os.path.join(output_folder, "predictions.csv"), PREDICTION_COLUMNS, rows
    )
    remove_stale_staging(output_folder)
    embeddings_folder = os.path.join(output_folder, "embeddings")
    os.makedirs(embeddings_folder, exist_ok=True)
    remove_stale_staging(embeddings_folder)
    for name, content in embedded.items():
        buffer = io.BytesIO()
        torch.save(content, buffer)
        write_bytes_atomic(
            os.path.join(embeddings_folder, f"dev_{name}.pt"), buffer.getvalue()
        )
    write_text_atomic(
        os.path.join(output_folder, "test_results.json"),
        json.dumps(test_results, indent=2),
    )
    write_text_atomic(evaluation_path, json.dumps(summary, indent=2))
