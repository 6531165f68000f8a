"""Checkpoints that a run killed at any moment cannot leave half-written, and that resume it
exactly.

:class:`AtomicCheckpointer` is SpeechBrain's ``Checkpointer`` whose checkpoints appear and
disappear by renaming, and whose recovery skips a checkpoint that cannot be loaded;
:class:`RandomStates` saves the random generators with each checkpoint (see docs/design.md).
"""

import contextlib
import errno
import logging
import os
import random
import re
import shutil

import numpy as np
import torch

from speechbrain.utils.checkpoints import (
    Checkpoint,
    Checkpointer,
    ckpt_recency,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from .dataio import UserError, write_text_atomic

__all__ = [
    "AtomicCheckpointer",
    "CheckpointError",
    "RandomStates",
    "kept_random_states",
    "end_of_epoch_checkpoints",
    "trim_train_log",
]

logger = logging.getLogger(__name__)

# Folders beside the checkpoints that SpeechBrain does not list (they do not
# start with CKPT).
STAGING_PREFIX = ".staging+"
DELETING_PREFIX = ".deleting+"
# Where checkpoints that could not be loaded are kept, for the user to inspect.
UNLOADABLE_FOLDER = "unloadable"


class CheckpointError(UserError, RuntimeError):
    """No checkpoint of a run can be loaded.

    The message lists each one and why.
    """


# Below this much free space, a failed write of torch.save is taken for a full disk.
_ROOM_FOR_A_WRITE = 64 * 2**20


def _brief(error):
    """An error's message on one line, cut to a readable length."""
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _fsync(path):
    """Flushes a file or a folder (its entries) to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AtomicCheckpointer(Checkpointer):
    """SpeechBrain's Checkpointer, with checkpoints that come and go atomically.

    Takes the same arguments as ``speechbrain.utils.checkpoints.Checkpointer``
    and is used the same way (``save_and_keep_only``, ``recover_if_possible``,
    ``find_checkpoint``, ...).

    Arguments
    ---------
    checkpoints_dir : str or pathlib.Path
        Folder of the checkpoints.
    recoverables : mapping or None
        Name -> object saved and recovered (the name is that of its file).
    custom_load_hooks : mapping or None
        Name -> function ``(instance, path)`` loading that object.
    custom_save_hooks : mapping or None
        Name -> function ``(instance, path)`` saving that object.
    allow_partial_load : bool
        Load a checkpoint that lacks the file of some recoverable.

    Example
    -------
    >>> import torch
    >>> folder = getfixture("tmp_path")
    >>> layer = torch.nn.Linear(2, 2)
    >>> checkpointer = AtomicCheckpointer(folder, recoverables={"layer": layer})
    >>> saved = checkpointer.save_checkpoint(
    ...     meta={"ccc": 0.5}, verbosity=logging.DEBUG
    ... )
    >>> (
    ...     saved.path.name.startswith("CKPT+"),
    ...     sorted(p.name for p in saved.path.iterdir()),
    ... )
    (True, ['CKPT.yaml', 'layer.ckpt'])
    >>> checkpointer.recover_if_possible().meta["ccc"]
    0.5
    """

    def _new_checkpoint_dirpath(self):
        # The base class makes the name unique among the final names; it is
        # written under the staging name.
        final = super()._new_checkpoint_dirpath()
        return final.with_name(STAGING_PREFIX + final.name)

    def _custom_checkpoint_dirpath(self, name):
        final = super()._custom_checkpoint_dirpath(name)
        return final.with_name(STAGING_PREFIX + final.name)

    def save_checkpoint(
        self, meta={}, end_of_epoch=True, name=None, verbosity=logging.INFO
    ):  # noqa: B006 (the base's signature)
        """Saves a checkpoint as SpeechBrain does, then moves it into place.

        It is saved into a staging folder, then renamed into place once every
        file is on disk. A checkpoint saved again under a custom name replaces
        the old one.

        Arguments
        ---------
        meta : mapping
            Added to the checkpoint's meta file (``unixtime`` is always
            there).
        end_of_epoch : bool
            Whether the checkpoint is at the end of an epoch (kept in the
            meta; it may affect loading).
        name : str or None
            Custom name of the checkpoint (after the ``CKPT+`` prefix); None:
            one made of a timestamp.
        verbosity : int
            Logging level of the message saying where it was saved.

        Returns
        -------
        checkpoint : speechbrain.utils.checkpoints.Checkpoint or None
            The checkpoint under its final name; None on processes other
            than the main one.
        """
        try:
            staged = super().save_checkpoint(
                meta=meta,
                end_of_epoch=end_of_epoch,
                name=name,
                verbosity=logging.DEBUG,
            )
        except RuntimeError as error:
            # torch.save reports a failed write as a RuntimeError ("file write failed",
            # "unexpected pos"), without its errno: on a disk with no room left, it is that.
            folder = str(self.checkpoints_dir)
            if shutil.disk_usage(folder).free >= _ROOM_FOR_A_WRITE:
                raise
            code = errno.ENOSPC
            raise OSError(code, os.strerror(code), folder) from error
        ddp_barrier()  # every process has written its files
        if not if_main_process():
            return None
        final = staged.path.with_name(staged.path.name[len(STAGING_PREFIX) :])
        for entry in staged.path.iterdir():
            _fsync(entry)
        _fsync(staged.path)
        if final.exists():  # a custom name saved again: the old one goes first
            self._remove(final)
        os.replace(staged.path, final)
        _fsync(final.parent)
        kind = "end-of-epoch" if end_of_epoch else "intra-epoch"
        logger.log(verbosity, f"Saved an {kind} checkpoint in {final}")
        return Checkpoint(
            final,
            staged.meta,
            {key: final / path.name for key, path in staged.paramfiles.items()},
        )

    def delete_checkpoints(
        self,
        *,
        num_to_keep=1,
        min_keys=None,
        max_keys=None,
        importance_keys=[ckpt_recency],  # noqa: B006 (the base's signature)
        ckpt_predicate=None,
        verbosity=logging.INFO,
    ):
        """Deletes the least important checkpoints, chosen as SpeechBrain does.

        Each is renamed out of the way before its files are removed.

        Arguments
        ---------
        num_to_keep : int
            Checkpoints kept for each key below (0 or more).
        min_keys : list of str or None
            Meta keys; the checkpoints with the lowest values are kept.
        max_keys : list of str or None
            Meta keys; the checkpoints with the highest values are kept.
        importance_keys : list of callable
            Functions of a checkpoint; those with the highest values are
            kept. The default keeps the most recent.
        ckpt_predicate : callable or None
            Only checkpoints for which it is true can be deleted (None: all).
        verbosity : int
            Logging level of the message naming each deleted checkpoint.

        Raises
        ------
        ValueError
            ``num_to_keep`` is negative.
        """
        if num_to_keep < 0:
            raise ValueError("Number of checkpoints to keep must be positive.")
        keys = [{"min_key": key} for key in min_keys or []]
        keys += [{"max_key": key} for key in max_keys or []]
        keys += [{"importance_key": key} for key in importance_keys]
        candidates, protected = set(), set()
        for key in keys:
            candidates.update(
                self.find_checkpoints(ckpt_predicate=ckpt_predicate, **key)
            )
            protected.update(
                self.find_checkpoints(
                    ckpt_predicate=ckpt_predicate,
                    max_num_checkpoints=num_to_keep,
                    **key,
                )
            )
        ddp_barrier()
        if if_main_process():
            for checkpoint in candidates - protected:
                self._remove(checkpoint.path)
                logger.log(
                    verbosity, f"Deleted checkpoint in {checkpoint.path}"
                )
        ddp_barrier()

    def _remove(self, path):
        """Renames a checkpoint folder out of the listing, then removes it."""
        doomed = path.with_name(DELETING_PREFIX + path.name)
        if doomed.exists():
            shutil.rmtree(doomed)
        os.replace(path, doomed)
        shutil.rmtree(doomed)

    def remove_leftovers(self):
        """Removes the folders a run killed while saving or deleting left."""
        if not if_main_process() or not self.checkpoints_dir.is_dir():
            return
        for entry in sorted(self.checkpoints_dir.iterdir()):
            if (
                entry.name.startswith((STAGING_PREFIX, DELETING_PREFIX))
                and entry.is_dir()
            ):
                what = (
                    "saved"
                    if entry.name.startswith(STAGING_PREFIX)
                    else "deleted"
                )
                logger.warning(
                    "removing %s, left by a run stopped while a checkpoint was %s",
                    entry,
                    what,
                )
                shutil.rmtree(entry)

    def recover_if_possible(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
    ):
        """Loads the checkpoint SpeechBrain would pick, or the next that loads.

        If the checkpoint cannot be loaded, the next one in the same order is
        tried, and so on. Checkpoints passed over are moved into
        ``<checkpoints_dir>/unloadable/``, with a warning naming each and its
        error. Leftovers of a killed run are removed first
        (:meth:`remove_leftovers`).

        Arguments
        ---------
        importance_key : callable or None
            Function of a checkpoint; the highest value is loaded first.
        max_key : str or None
            Meta key; the checkpoint with the highest value is loaded first
            (only checkpoints with this key are considered).
        min_key : str or None
            Meta key; the checkpoint with the lowest value is loaded first
            (only checkpoints with this key are considered).
        ckpt_predicate : callable or None
            Only checkpoints for which it is true are considered (None: all).

        Returns
        -------
        checkpoint : speechbrain.utils.checkpoints.Checkpoint or None
            The checkpoint loaded; None when there is none to load.

        Raises
        ------
        CheckpointError
            There are checkpoints, but none can be loaded (nothing is moved
            then).
        """
        self.remove_leftovers()
        ddp_barrier()
        ranked = self.find_checkpoints(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
        )
        failed = []
        for checkpoint in ranked:
            try:
                self.load_checkpoint(checkpoint)
            except (
                Exception
            ) as error:  # whatever a damaged or foreign file raises
                failed.append((checkpoint, error))
                logger.warning(
                    "checkpoint %s cannot be loaded (%s: %s); trying the one before",
                    checkpoint.path,
                    type(error).__name__,
                    _brief(error),
                )
                continue
            self._move_aside([bad for bad, _ in failed])
            return checkpoint
        if failed:
            listing = "".join(
                f"\n  {bad.path}: {type(error).__name__}: {_brief(error)}"
                for bad, error in failed
            )
            raise CheckpointError(
                f"no checkpoint in {self.checkpoints_dir} can be loaded:{listing}\n"
                "Run with the settings (encoder, head) of the run that saved them, or move "
                f"{self.checkpoints_dir} aside to start this run over."
            )
        logger.info(
            "No checkpoint in %s yet: starting from the beginning.",
            self.checkpoints_dir,
        )
        return None

    def _move_aside(self, checkpoints):
        if not checkpoints:
            return
        if if_main_process():
            folder = self.checkpoints_dir / UNLOADABLE_FOLDER
            folder.mkdir(exist_ok=True)
            for checkpoint in checkpoints:
                os.replace(checkpoint.path, folder / checkpoint.path.name)
                logger.warning(
                    "moved checkpoint %s, which cannot be loaded, to %s",
                    checkpoint.path,
                    folder,
                )
        ddp_barrier()


@register_checkpoint_hooks
class RandomStates:
    """The states of the random generators a run draws from, as a checkpoint recoverable.

    Saves the global generators of PyTorch (CPU and every CUDA device), NumPy
    and Python. An end-of-epoch checkpoint's states are restored when it is
    loaded. An intra-epoch checkpoint's are held until :meth:`restore` is
    called where the run continues: before its next training batch, or before
    the validation if the checkpoint followed the epoch's last batch (creating
    the training DataLoader's iterator on recovery draws from PyTorch's
    generator).

    Example
    -------
    >>> folder = getfixture("tmp_path")
    >>> states = RandomStates()
    >>> checkpointer = AtomicCheckpointer(folder, recoverables={"rng": states})
    >>> _ = torch.manual_seed(0)
    >>> saved = checkpointer.save_checkpoint(
    ...     end_of_epoch=False, verbosity=logging.DEBUG
    ... )
    >>> expected = torch.rand(2)
    >>> _ = checkpointer.recover_if_possible()
    >>> states.restore()
    True
    >>> torch.equal(torch.rand(2), expected)
    True
    """

    def __init__(self):
        self.pending = None

    @staticmethod
    def capture():
        """The generators' current states.

        Returns
        -------
        states : dict
            ``torch``, ``cuda`` (one state per device, empty without CUDA),
            ``numpy`` and ``python`` states, made of tensors and numbers only.
        """
        kind, keys, position, has_gauss, gauss = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all()
            if torch.cuda.is_initialized()
            else [],
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)))
            + (position, has_gauss, gauss),
            "python": random.getstate(),
        }

    @staticmethod
    def apply(states):
        """Sets the generators to ``states``, as :meth:`capture` returns them.

        Arguments
        ---------
        states : dict
            The states to set; CUDA states are set when the device count
            matches.
        """
        torch.set_rng_state(states["torch"])
        if states["cuda"] and len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        kind, keys, position, has_gauss, gauss = states["numpy"]
        np.random.set_state(
            (kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss)
        )
        random.setstate(states["python"])

    def restore(self):
        """Restores the states an intra-epoch checkpoint held back.

        Returns
        -------
        restored : bool
            Whether there were states to restore.
        """
        if self.pending is None:
            return False
        self.apply(self.pending)
        self.pending = None
        return True

    @mark_as_saver
    def save(self, path):
        """Saves the current states.

        Arguments
        ---------
        path : str or pathlib.Path
            The checkpoint's file.
        """
        torch.save(self.capture(), path)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        """Loads saved states: restored now after an epoch, else held back.

        Arguments
        ---------
        path : str or pathlib.Path
            The checkpoint's file.
        end_of_epoch : bool
            Whether the checkpoint was saved at the end of an epoch.
        """
        states = torch.load(path, map_location="cpu", weights_only=True)
        if end_of_epoch:
            self.pending = None
            self.apply(states)
        else:
            self.pending = states


@contextlib.contextmanager
def kept_random_states():
    """Runs a block that leaves the global random generators as it found them.

    Whether a step ran (a preparation done now) or not (found done earlier),
    what follows then draws the same numbers.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> with kept_random_states():
    ...     _ = torch.rand(5)
    >>> torch.equal(torch.rand(1), torch.manual_seed(0) and torch.rand(1))
    True
    """
    states = RandomStates.capture()
    try:
        yield
    finally:
        RandomStates.apply(states)


def end_of_epoch_checkpoints(checkpointer):
    """The end-of-epoch checkpoints a checkpointer keeps, by epoch.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The run's checkpointer (its ``checkpoints_dir`` is read).

    Returns
    -------
    checkpoints : dict
        Epoch (int) -> ``Checkpoint`` whose meta holds the dev ``ccc``;
        intra-epoch checkpoints, which carry no dev score, are left out.
    """
    found = {}
    for checkpoint in checkpointer.list_checkpoints():
        if "ccc" not in checkpoint.meta:
            continue  # intra-epoch checkpoints carry no dev score
        epoch = checkpoint.meta.get("epoch")
        if epoch is None:  # runs saved before the epoch entered the meta
            with open(os.path.join(checkpoint.path, "counter.ckpt")) as fin:
                epoch = int(fin.read())
        found[int(epoch)] = checkpoint
    return found


def trim_train_log(path, epochs_done):
    r"""Cuts a train log back to the epochs a recovered checkpoint holds.

    Keeps the lines of epochs 1 to ``epochs_done`` and drops the rest: lines
    of later epochs and test lines, written by an attempt that was stopped
    before its next checkpoint. The log is rewritten atomically, and only if
    something goes.

    Arguments
    ---------
    path : str
        The train log (absent: nothing to do).
    epochs_done : int
        Epochs the recovered checkpoint holds.

    Example
    -------
    >>> log = getfixture("tmp_path") / "train_log.txt"
    >>> _ = log.write_text(
    ...     "epoch: 1/3 - x\nepoch: 2/3 - x\ncondition: clean - x\n"
    ... )
    >>> trim_train_log(log, 1)
    >>> log.read_text()
    'epoch: 1/3 - x\n'
    """
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as fin:
        lines = fin.readlines()
    kept = []
    for line in lines:
        match = re.match(r"epoch: (\d+)/", line)
        if match and int(match.group(1)) <= epochs_done:
            kept.append(line)
    if kept != lines:
        write_text_atomic(str(path), "".join(kept))
