"""Mixing speech with recorded noise at a target SNR, met over each utterance's own samples."""

import torch

from speechbrain.augment.time_domain import AddNoise
from speechbrain.dataio.dataio import (
    length_to_mask,
    load_data_csv,
    read_audio_info,
)

from .dataio import DataError, load_audio

__all__ = ["UtteranceAddNoise", "snr_db"]


class UtteranceAddNoise(AddNoise):
    """AddNoise with a noise segment and offset drawn per utterance.

    Segment and offset are drawn again at every call.

    Arguments
    ---------
    csv_file : str
        Noise bank in AddNoise's CSV format (``ID,duration,wav``).
    snr_low : float
        Lower end of the SNR range, in dB; each utterance draws uniformly from
        the range (equal ends fix the SNR).
    snr_high : float
        Upper end of the SNR range, in dB.
    replacements : dict
        ``$key`` replacements applied to the CSV's paths, as in SpeechBrain.
    seed : int or None
        None draws from PyTorch's global generator, so each training batch gets
        fresh noise. An integer gives a private generator, restarted by
        :meth:`reset`: a dev or test set passed in the same order is then
        contaminated identically every time.
    sample_rate : int
        Rate of the speech; noise files at another rate are refused, since the
        noise bank is prepared at the recipe's rate.
    normalize : bool
        As in AddNoise: rescale mixtures whose peak exceeds 1.

    Example
    -------
    >>> import soundfile as sf
    >>> folder = getfixture("tmp_path")
    >>> sf.write(
    ...     str(folder / "hum.wav"), 0.1 * torch.randn(16000).numpy(), 16000
    ... )
    >>> _ = (folder / "noise.csv").write_text(
    ...     f"ID,duration,wav\\nhum,1.0,{folder / 'hum.wav'}\\n"
    ... )
    >>> add_noise = UtteranceAddNoise(
    ...     str(folder / "noise.csv"), snr_low=10.0, snr_high=10.0, seed=0
    ... )
    >>> speech, lengths = torch.randn(2, 8000), torch.tensor([1.0, 0.5])
    >>> speech[1, 4000:] = 0.0
    >>> noisy = add_noise(speech, lengths)
    >>> noisy[1, 4000:].abs().max().item()  # the padding stays silent
    0.0
    >>> noisy.shape
    torch.Size([2, 8000])
    """

    def __init__(
        self,
        csv_file,
        *,
        snr_low=0.0,
        snr_high=0.0,
        replacements=None,
        seed=None,
        sample_rate=16000,
        normalize=False,
    ):
        super().__init__(
            csv_file=csv_file,
            snr_low=snr_low,
            snr_high=snr_high,
            replacements=dict(replacements or {}),
            normalize=normalize,
            noise_sample_rate=sample_rate,
            clean_sample_rate=sample_rate,
        )
        self.seed = seed
        self.generator = None
        self.sample_rate = sample_rate
        self._bank = None
        self.reset()

    def reset(self):
        """Restarts the private generator (a no-op without a seed)."""
        if self.seed is not None:
            self.generator = torch.Generator().manual_seed(int(self.seed))

    def _rand(self, n):
        return torch.rand(n, generator=self.generator)

    def forward(self, waveforms, lengths):
        """Mixes noise into each utterance at an SNR drawn from the range.

        Arguments
        ---------
        waveforms : torch.Tensor
            ``[B, S]`` speech, zero-padded.
        lengths : torch.Tensor
            ``[B]`` relative lengths of the utterances.

        Returns
        -------
        noisy : torch.Tensor
            ``[B, S]`` speech with noise over each utterance's own samples.
        """
        if self.generator is None:
            return super().forward(waveforms, lengths)
        # The parent draws each utterance's SNR from the global generator; draw it from ours.
        # manual_seed also seeds CUDA, so its state is forked and restored too.
        devices = [waveforms.device] if waveforms.is_cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(
                int(torch.randint(2**62, (1,), generator=self.generator))
            )
            return super().forward(waveforms, lengths)

    def _noise_bank(self):
        """Loads the bank once; segments are short, so it stays in memory."""
        if self._bank is None:
            rows = load_data_csv(self.csv_file, replacements=self.replacements)
            if not rows:
                raise DataError(
                    f"noise bank {self.csv_file} lists no noise file"
                )
            bank = []
            for noise_id, row in rows.items():
                info = read_audio_info(row["wav"])
                if info.sample_rate != self.sample_rate:
                    raise DataError(
                        f"noise bank {self.csv_file}, row {noise_id}: {row['wav']} is "
                        f"{info.sample_rate} Hz, the recipe runs at {self.sample_rate} Hz; "
                        "resample the noise bank (the noise preparation does it)"
                    )
                audio = load_audio(row["wav"], self.sample_rate)
                if audio.numel() == 0:
                    raise DataError(
                        f"noise bank {self.csv_file}, row {noise_id}: empty file"
                    )
                bank.append(audio)
            self._bank = bank
        return self._bank

    def _load_noise(self, lengths, max_length):
        """One noise excerpt per utterance, as long as it, zero over padding.

        Returns the noise ``[B, max_length]`` and, as the length AddNoise
        measures the noise level over, each utterance's own length ``[B, 1]``.
        """
        bank = self._noise_bank()
        # AddNoise passes relative length x padded length, e.g. 12344.999 for 12345 samples:
        # rounded, not truncated, or the last sample would get no noise.
        lengths = torch.round(lengths).long().clamp(max=max_length).squeeze(1)
        batch = torch.zeros(len(lengths), max_length)
        picks = (
            (self._rand(len(lengths)) * len(bank))
            .long()
            .clamp(max=len(bank) - 1)
        )
        offsets = self._rand(len(lengths))
        for i, (length, pick) in enumerate(
            zip(lengths.tolist(), picks.tolist(), strict=True)
        ):
            noise = bank[pick]
            if len(noise) < length:
                # A segment shorter than the utterance is looped rather than zero-padded, so
                # that the noise level is not measured over silence.
                noise = noise.repeat(length // len(noise) + 1)
            start = int(offsets[i] * (len(noise) - length + 1))
            batch[i, :length] = noise[start : start + length]
        return batch.to(lengths.device), lengths.unsqueeze(1).to(torch.float32)


def snr_db(speech, noise, lengths):
    """SNR in dB of ``speech + noise`` over each utterance's own samples.

    Arguments
    ---------
    speech : torch.Tensor
        ``[B, S]`` the speech component of each mixture, as it is in it.
    noise : torch.Tensor
        ``[B, S]`` the noise component of each mixture, as it is in it.
    lengths : torch.Tensor
        ``[B]`` relative lengths.

    Returns
    -------
    snr : torch.Tensor
        ``[B]`` 10 log10 of the speech-to-noise power ratio, in dB.

    Example
    -------
    >>> speech = torch.ones(1, 4)
    >>> snr = snr_db(speech, 0.1 * speech, torch.tensor([1.0]))
    >>> round(snr.item(), 4)
    20.0
    """
    num = torch.round(lengths * speech.shape[1]).long()
    mask = length_to_mask(num, speech.shape[1], torch.float64, speech.device)
    power_speech = (speech.double() * mask).pow(2).sum(1)
    power_noise = (noise.double() * mask).pow(2).sum(1)
    return 10 * torch.log10(power_speech / power_noise.clamp_min(1e-20))
