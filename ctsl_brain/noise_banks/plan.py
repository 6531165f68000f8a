"""The plan of the noise banks: which samples of which recording go into which segment, and
where pieces are joined with crossfades, as arithmetic on lengths (see docs/design.md).
"""

from dataclasses import dataclass

__all__ = [
    "CROSSFADE_SECONDS",
    "Bank",
    "Part",
    "bank_boundary",
    "plan_bank",
    "spans_between",
]

# Length of the crossfade that joins two pieces of noise (see docs/design.md).
CROSSFADE_SECONDS = 0.01


@dataclass(frozen=True)
class Part:
    """Consecutive samples of one recording that go into a segment.

    Positions and lengths are in samples at the recipe's rate.

    Arguments
    ---------
    recording : int
        Index in the recordings, in the order the files are taken.
    start : int
        First sample, in the recording.
    length : int
        Samples.
    offset : int
        Where the first sample goes in the segment.
    ramp : str or None
        ``"in"`` or ``"out"`` within a crossfade of ``fade`` samples, or None.
    fade : int
        Samples in the crossfade, 0 outside one.
    ramp_start : int
        Position of the first sample in the ramp.

    Example
    -------
    >>> part = Part(recording=0, start=100, length=10, offset=0)
    >>> part.start + part.length, part.ramp  # past its last sample; no ramp
    (110, None)
    """

    recording: int
    start: int
    length: int
    offset: int
    ramp: str | None = None
    fade: int = 0
    ramp_start: int = 0


@dataclass
class Bank:
    """What a bank is made of and how much audio it takes.

    Arguments
    ---------
    segments : list of tuple
        ``(length, [Part, ...])``, in order of their first sample in the
        recordings.
    recordings : int
        Recordings that contribute.
    recorded : int
        Samples taken from the recordings.
    fades : list of int
        The length of each crossfade, by which the joined pieces overlap.

    Example
    -------
    >>> Bank(segments=[], recordings=2, recorded=40, fades=[1]).length
    39
    """

    segments: list
    recordings: int
    recorded: int
    fades: list

    @property
    def length(self):
        """Samples in its segments.

        Returns
        -------
        length : int
            What it takes from the recordings less the crossfades' overlaps.
        """
        return self.recorded - sum(self.fades)


def bank_boundary(lengths, *, adapt_len, seg_len, fade_len, test_bank):
    """Where the adaptation bank ends.

    In samples from the start of the recordings put end to end.

    ``adapt_len`` when there is that much audio and, with ``test_bank``, enough
    after it for a test bank of one whole segment; otherwise the furthest
    boundary that leaves the test bank one segment.

    Arguments
    ---------
    lengths : list of int
        Samples in each recording, in the order the files are taken.
    adapt_len : int
        Samples asked for the adaptation bank.
    seg_len : int
        Samples in a segment.
    fade_len : int
        Samples in a crossfade between two pieces.
    test_bank : bool
        Whether a held-out test bank follows the adaptation bank.

    Returns
    -------
    boundary : int or None
        The boundary; None when the audio cannot give each bank asked for one
        segment (or, for an adaptation bank asked shorter than a segment, what
        was asked).

    Example
    -------
    >>> sizes = {"seg_len": 10, "fade_len": 2}
    >>> bank_boundary([23, 40], adapt_len=40, **sizes, test_bank=True)
    40
    >>> bank_boundary(
    ...     [23], adapt_len=40, **sizes, test_bank=True
    ... )  # 10 left to test
    13
    >>> bank_boundary([23], adapt_len=40, **sizes, test_bank=False)
    23
    >>> print(bank_boundary([15], adapt_len=40, **sizes, test_bank=True))
    None
    """
    total = sum(lengths)
    end = min(adapt_len, total)
    if test_bank:

        def test_noise(boundary):
            """Samples in the test bank's segments.

            Arguments
            ---------
            boundary : int
                Where the adaptation bank would end.

            Returns
            -------
            length : int
                Samples in the segments of the test bank after it.
            """
            return plan_bank(
                spans_between(lengths, boundary, total), seg_len, fade_len
            ).length

        if test_noise(0) < seg_len:
            return None
        if test_noise(end) < seg_len:
            # The test bank's noise can only shrink as the boundary moves on, so the boundary
            # is searched for by bisection: test_noise(low) is enough, test_noise(high) is not.
            low, high = 0, end
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (
                    (middle, high)
                    if test_noise(middle) >= seg_len
                    else (low, middle)
                )
            end = low
    if (
        end < adapt_len
        and plan_bank(spans_between(lengths, 0, end), seg_len, fade_len).length
        < seg_len
    ):
        return None
    return end


def spans_between(lengths, start, stop):
    """The audio between two positions of the recordings put end to end.

    The audio is given by recording.

    Arguments
    ---------
    lengths : list of int
        Samples in each recording, in the order the files are taken.
    start : int
        The first position, in samples from the start of the first recording.
    stop : int
        The position after the last, in samples from the same start.

    Returns
    -------
    spans : list of tuple
        ``(recording, start, stop)`` within each recording, leaving out empty
        spans.

    Example
    -------
    >>> spans_between([23, 26, 4, 30], 10, 50)
    [(0, 10, 23), (1, 0, 26), (2, 0, 1)]
    """
    spans, offset = [], 0
    for index, length in enumerate(lengths):
        begin, end = max(start, offset), min(stop, offset + length)
        if end > begin:
            spans.append((index, begin - offset, end - offset))
        offset += length
    return spans


def plan_bank(spans, seg_len, fade_len):
    """The segments of a bank made of ``spans``.

    Whole segments first, then the pieces joined.

    Arguments
    ---------
    spans : list of tuple
        ``(recording, start, stop)`` in the bank's order, at the recipe's rate.
    seg_len : int
        Samples in a segment.
    fade_len : int
        Samples in a crossfade between two pieces.

    Returns
    -------
    bank : Bank
        Its segments sorted by their first sample in the recordings.

    Example
    -------
    >>> bank = plan_bank([(0, 0, 23), (1, 0, 17)], seg_len=10, fade_len=2)
    >>> [
    ...     length for length, _ in bank.segments
    ... ]  # 3 + 7 samples joined, overlapping by 1
    [10, 10, 9, 10]
    >>> bank.fades, bank.recorded, bank.length
    ([1], 40, 39)
    """
    wholes, pieces = _pieces(spans, seg_len)
    fades = _fades(pieces, fade_len)
    segments = [
        (seg_len, [Part(index, start, seg_len, 0)]) for index, start in wholes
    ]
    segments += _joined(pieces, fades, seg_len)
    segments.sort(
        key=lambda segment: (segment[1][0].recording, segment[1][0].start)
    )
    return Bank(
        segments,
        recordings=len({index for index, _, _ in spans}),
        recorded=sum(stop - start for _, start, stop in spans),
        fades=fades,
    )


def _pieces(spans, seg_len):
    """Cuts each span into whole segments and a piece.

    Whole segments are cut from the start of each span, as
    ``(recording, start)``; what is left of each span, shorter than a segment,
    is a piece ``(recording, start, length)``.
    """
    wholes, pieces = [], []
    for index, start, stop in spans:
        count = (stop - start) // seg_len
        wholes += [(index, start + k * seg_len) for k in range(count)]
        if start + count * seg_len < stop:
            pieces.append(
                (index, start + count * seg_len, stop - start - count * seg_len)
            )
    return wholes, pieces


def _fades(pieces, fade_len):
    """The crossfade joining each piece to the next.

    At most half of either piece, so that the two crossfades of a piece never
    overlap.
    """
    return [
        min(fade_len, before[2] // 2, after[2] // 2)
        for before, after in zip(pieces, pieces[1:], strict=False)
    ]


def _joined(pieces, fades, seg_len):
    """The pieces end to end, each crossfaded into the next, cut into segments.

    Segments are of ``seg_len``; what is left at the end is a last, shorter
    segment if it lasts half a segment or more, and joins the segment before it
    otherwise (which then lasts up to 1.5 segments). Returns
    ``[(length, [Part, ...])]``.
    """
    # Each piece in up to three runs: fading in from the previous piece, at full level, fading
    # out into the next; a run is (position in the joined audio, Part fields).
    runs = []
    position = 0
    for number, (index, start, length) in enumerate(pieces):
        head = fades[number - 1] if number > 0 else 0
        tail = fades[number] if number < len(fades) else 0
        for offset, count, ramp, fade in (
            (0, head, "in", head),
            (head, length - head - tail, None, 0),
            (length - tail, tail, "out", tail),
        ):
            if count > 0:
                runs.append(
                    (
                        position + offset,
                        index,
                        start + offset,
                        count,
                        ramp,
                        fade,
                    )
                )
        position += length - tail
    count = -(-position // seg_len)
    if count > 1 and 2 * (position - (count - 1) * seg_len) < seg_len:
        # A tail shorter than half a segment joins the segment before it: on its own, the mixer
        # would loop it many times over an utterance (a few milliseconds looped are a buzz).
        count -= 1
    ends = [(k + 1) * seg_len for k in range(count - 1)] + [position]
    parts = [[] for _ in range(count)]
    for at, index, start, length, ramp, fade in runs:
        done = 0
        while done < length:
            number = min((at + done) // seg_len, count - 1)
            offset = at + done - number * seg_len
            take = min(length - done, ends[number] - (at + done))
            ramp_start = done if ramp else 0
            parts[number].append(
                Part(index, start + done, take, offset, ramp, fade, ramp_start)
            )
            done += take
    return [(ends[k] - k * seg_len, segment) for k, segment in enumerate(parts)]
