"""A web page to try a model: upload a recording or record one, read its numbers.

Built with gradio (an optional extra: ``pip install -r requirements-serve.txt``).
"""

import os
import tempfile

from ..dataio import ATTRIBUTES
from .inference import plot_trajectory

__all__ = ["build_app", "score_file"]

HOP_SECONDS = 1.0


def score_file(model, path, *, hop_seconds=HOP_SECONDS):
    """A file's arousal, dominance and valence, and its trajectory when long.

    Arguments
    ---------
    model : EmotionRegressor
        The loaded model.
    path : str
        An audio file.
    hop_seconds : float
        Seconds between the windows of the trajectory.

    Returns
    -------
    scores : dict
        ``arousal``, ``dominance``, ``valence`` on the model's scale, as
        ``predict`` writes them.
    trajectory : list of dict or None
        For a file longer than the model's window, its windows' predictions
        (:meth:`EmotionRegressor.predict_trajectory`); None otherwise.

    Raises
    ------
    DataError
        The file cannot be used: the message ``predict`` writes in its
        ``error`` column.
    """
    from ..dataio import DataError

    frame = model.predict_files([path])
    row = frame.iloc[0]
    if row["error"]:
        raise DataError(row["error"])
    scores = {name: float(row[name]) for name in ATTRIBUTES}
    trajectory = None
    if row["duration"] > model.hparams.window_seconds:
        trajectory = model.predict_trajectory(path, hop_seconds)
    return scores, trajectory


def build_app(model, *, title="Speech emotion", hop_seconds=HOP_SECONDS):
    """The gradio app of a model.

    Arguments
    ---------
    model : EmotionRegressor
        The loaded model.
    title : str
        The page's title.
    hop_seconds : float
        Seconds between the windows of a long recording's trajectory.

    Returns
    -------
    app : gradio.Blocks
        Its ``predict`` endpoint takes an audio file and gives the scores
        (a dict by attribute) and the trajectory's plot (a PNG, or None).
    """
    import gradio as gr

    from ..dataio import DataError

    low, high = model.hparams.label_min, model.hparams.label_max
    window = model.hparams.window_seconds
    plots = tempfile.mkdtemp(prefix="ctsl_serve_")

    def predict(path):
        """Scores one recording for the page; a bad file is one message."""
        if not path:
            raise gr.Error("Upload a recording or record one first.")
        try:
            scores, trajectory = score_file(
                model, path, hop_seconds=hop_seconds
            )
        except DataError as error:
            # Gradio's copy of an upload has a temporary folder: the file's name says more.
            message = str(error).replace(path, os.path.basename(path))
            raise gr.Error(message, print_exception=False) from None
        plot = None
        if trajectory is not None:
            plot = os.path.join(plots, f"{len(os.listdir(plots))}.png")
            plot_trajectory(trajectory, plot, title=os.path.basename(path))
        return scores, plot

    with gr.Blocks(title=title) as app:
        gr.Markdown(
            f"# {title}\n\nArousal, dominance and valence of a recording, on the "
            f"{low:g}-{high:g} scale of the model's training labels. A recording "
            f"longer than {window:g} s also gets its time series (windows of {window:g} "
            f"s every {hop_seconds:g} s)."
        )
        audio = gr.Audio(
            sources=["upload", "microphone"], type="filepath", label="Recording"
        )
        button = gr.Button("Score", variant="primary")
        scores = gr.JSON(label=f"Scores ({low:g}-{high:g})")
        plot = gr.Image(label="Over time", type="filepath")
        button.click(
            predict, inputs=audio, outputs=[scores, plot], api_name="predict"
        )
    return app
