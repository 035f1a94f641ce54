"""Event metrics of full-duplex turn-taking: F1 of matched events and the stop latency after a barge-in.

An event (the model starts speaking; the model stops speaking) is correct when it falls within a tolerance window
after its reference moment (the end of the user's turn; the onset of user speech over the model's playback). Each
reference matches at most one prediction and vice versa; references are taken in time order and each takes the
earliest unmatched prediction in its window, which gives the maximum matching for windows of one length.

- turn-taking: references = user turn ends, predictions = starts, window [end, end + `take_tolerance`]: a start
  before the end (interrupting the user) or later than the window (dead air) is a false positive, and its turn end
  a miss;
- barge-in: references = onsets of user speech during the model's playback, predictions = stops (the model's own
  `<shift>`, not running out of speech), window [onset, onset + `stop_tolerance`]: a stop on echo or noise is a
  false positive; stop latency = stop - onset over the matched pairs. An overlap so close to the end of the
  response that it would run out before the reference stops (`Rendering.late_overlaps`) is no barge-in: a stop
  within its window is ignored. This counts ANY user speech over the model, including speech the policy caused by
  starting in a pause inside a user turn (the user's next clause then overlaps it): a policy that interrupts and
  then stops gets credit for its own interruptions, so this figure is inflated for such policies;
- scripted barge-in: the same, with references = onsets of the SCRIPTED barge-ins only (turns the dialogue script
  times to start during the model's answer, `Rendering.barge_ins`) that began while the model was speaking.
  Every stop not matched to one is a false alarm, including stops after user speech the policy talked over; stops
  within the window of a scripted barge-in whose response was about to end anyway (`Rendering.late_barge_ins`)
  are ignored.
"""

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from paperzoo.core.errors import require

TAKE_TOLERANCE = 0.8  # seconds after the user's turn ends
STOP_TOLERANCE = 0.8  # seconds after a barge-in begins


@dataclass
class EventCounts:
    """True positives, false positives, misses, and the delays (prediction - reference) of the matches."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    delays: list[float] = field(default_factory=list)

    def __add__(self, other: "EventCounts") -> "EventCounts":
        return EventCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.delays + other.delays)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """2 TP / (2 TP + FP + FN); 1.0 when there was nothing to predict and nothing was predicted."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 1.0

    @property
    def mean_delay(self) -> float:
        return statistics.fmean(self.delays) if self.delays else float("nan")


def match_events(
    predicted: Sequence[float], reference: Sequence[float], tolerance: float, min_delay: float = 0.0
) -> EventCounts:
    """Match `predicted` to `reference` event times: a pair matches when min_delay <= p - r <= tolerance."""
    require(tolerance >= min_delay, f"tolerance {tolerance} must be >= min_delay {min_delay}")
    used = [False] * len(predicted)
    order = sorted(range(len(predicted)), key=lambda i: predicted[i])
    counts = EventCounts()
    for r in sorted(reference):
        match = next(
            (i for i in order if not used[i] and min_delay <= predicted[i] - r <= tolerance),
            None,
        )
        if match is None:
            counts.fn += 1
        else:
            used[match] = True
            counts.tp += 1
            counts.delays.append(predicted[match] - r)
    counts.fp = used.count(False)
    return counts


@dataclass
class DuplexScores:
    """Turn-taking and barge-in counts over a set of dialogues."""

    turn_taking: EventCounts
    barge_in: EventCounts  # references: any user speech over the model (includes self-caused overlaps)
    scripted_barge_in: EventCounts = field(default_factory=EventCounts)  # references: scripted barge-ins only

    def summary(self) -> dict[str, float]:
        scripted = self.scripted_barge_in
        return {
            "turn-taking F1": self.turn_taking.f1,
            "turn-taking precision": self.turn_taking.precision,
            "turn-taking recall": self.turn_taking.recall,
            "response delay s": self.turn_taking.mean_delay,
            "barge-in F1": self.barge_in.f1,
            "barge-in precision": self.barge_in.precision,
            "barge-in recall": self.barge_in.recall,
            "stop latency s": self.barge_in.mean_delay,
            "barge-ins": float(self.barge_in.tp + self.barge_in.fn),
            "false stops": float(self.barge_in.fp),
            "scripted barge-in F1": scripted.f1,
            "scripted barge-in precision": scripted.precision,
            "scripted barge-in recall": scripted.recall,
            "scripted stop latency s": scripted.mean_delay,
            "scripted barge-ins": float(scripted.tp + scripted.fn),
            "false stops (scripted)": float(scripted.fp),
        }


def score_dialogues(
    renderings: Iterable[object], take_tolerance: float = TAKE_TOLERANCE, stop_tolerance: float = STOP_TOLERANCE
) -> DuplexScores:
    """Turn-taking, barge-in and scripted barge-in counts summed over `renderings` (each with `starts`,
    `turn_ends`, `stops`, `overlaps`, `barge_ins` and optionally `late_overlaps`, `late_barge_ins`, as
    `dialogues.Rendering`)."""
    turn_taking, barge_in, scripted = EventCounts(), EventCounts(), EventCounts()

    def unexplained(stops: list[float], late: list[float]) -> list[float]:  # stops right after `late` are neither
        return [s for s in stops if not any(0.0 <= s - o <= stop_tolerance for o in late)]

    for r in renderings:
        turn_taking += match_events(r.starts, r.turn_ends, take_tolerance)  # type: ignore[attr-defined]
        stops = r.stops  # type: ignore[attr-defined]
        barge_in += match_events(unexplained(stops, getattr(r, "late_overlaps", [])), r.overlaps, stop_tolerance)  # type: ignore[attr-defined]
        scripted += match_events(
            unexplained(stops, getattr(r, "late_barge_ins", [])),
            r.barge_ins,  # type: ignore[attr-defined]
            stop_tolerance,
        )
    return DuplexScores(turn_taking, barge_in, scripted)
