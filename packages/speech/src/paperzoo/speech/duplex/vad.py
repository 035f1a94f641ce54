"""The modular baseline SALMONN-omni argues against: an energy voice-activity detector plus a fixed silence timeout.

Listening: a block is voiced when the microphone's block energy exceeds `threshold_db` (dBFS of the block RMS);
once the user has been heard, `timeout` seconds of unvoiced blocks end the turn and the policy `<shift>`s to
speaking. Speaking: the microphone also carries the echo of the model's own voice, so a separate (higher)
`speaking_threshold_db` applies, and `onset_blocks` consecutive voiced blocks are a barge-in: `<shift>` to
listening. It only hears the microphone; it has no model of the echo (the playback stream is ignored).
"""

import math

import torch

from paperzoo.core.errors import require
from paperzoo.speech.data.audio import SAMPLE_RATE
from paperzoo.speech.duplex.scheduler import BLOCK_SAMPLES, LISTEN, SPEAK


def block_level_db(block: torch.Tensor) -> float:
    """The block's RMS in dB relative to full scale (a silent block gives -100 dB)."""
    return 10.0 * math.log10(float(block.pow(2).mean()) + 1e-10)


class EnergyVADPolicy:
    """A `BlockPolicy`: energy VAD + fixed timeout (see the module docstring).

    Args:
        threshold_db: voiced-block threshold while listening.
        timeout: seconds of silence after user speech that end the user's turn.
        speaking_threshold_db: voiced-block threshold while speaking (echo present); None = `threshold_db`.
        onset_blocks: consecutive voiced blocks while speaking that count as a barge-in.
        block_samples: samples per block.
    """

    def __init__(
        self,
        threshold_db: float = -35.0,
        timeout: float = 0.56,
        speaking_threshold_db: float | None = None,
        onset_blocks: int = 2,
        block_samples: int = BLOCK_SAMPLES,
    ):
        require(timeout > 0, f"timeout must be positive seconds, got {timeout}")
        require(onset_blocks >= 1, f"onset_blocks must be >= 1, got {onset_blocks}")
        self.threshold_db, self.timeout, self.onset_blocks = threshold_db, timeout, onset_blocks
        self.speaking_threshold_db = threshold_db if speaking_threshold_db is None else speaking_threshold_db
        self.timeout_blocks = math.ceil(round(timeout * SAMPLE_RATE / block_samples, 6))
        self.reset()

    def reset(self) -> None:
        self.heard_user = False  # user speech since the model last spoke
        self.silent_blocks = 0
        self.voiced_run = 0
        self.last_state = LISTEN

    def decide(self, mic: torch.Tensor, playback: torch.Tensor, state: int) -> bool:
        level = block_level_db(mic)
        if state == LISTEN and self.last_state == SPEAK:  # the response ran out by itself
            self.heard_user, self.silent_blocks = False, 0
        self.last_state = state
        if state == LISTEN:
            if level > self.threshold_db:
                self.heard_user, self.silent_blocks = True, 0
                return False
            self.silent_blocks += 1
            if self.heard_user and self.silent_blocks >= self.timeout_blocks:
                self.heard_user, self.silent_blocks, self.last_state = False, 0, SPEAK
                return True
            return False
        self.voiced_run = self.voiced_run + 1 if level > self.speaking_threshold_db else 0
        if self.voiced_run >= self.onset_blocks:  # barge-in: the user is talking, answer when they stop
            self.voiced_run, self.heard_user, self.silent_blocks, self.last_state = 0, True, 0, LISTEN
            return True
        return False
