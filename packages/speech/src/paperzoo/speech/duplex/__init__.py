"""SALMONN-omni's full-duplex component: a streaming listen/speak loop with `<think>`/`<shift>` state tokens.

Paper: Yu et al., "SALMONN-omni: A Codec-free LLM for Full-duplex Speech Understanding and Generation",
https://arxiv.org/abs/2411.18138 (CATALOG 1, tier C); the later "SALMONN-omni: A Standalone Speech LLM without
Codec Injection for Full-duplex Conversation", https://arxiv.org/abs/2505.17060, describes the same mechanism.

What the paper does: a streaming (Mamba) speech encoder embeds, per fixed time block, both what the microphone
hears (the user, background sound, the echo of the model's own voice) and what the model itself is saying; an LLM
reads these embeddings block by block and emits either response text or state tokens that keep it listening
(`<think>`) or switch between listening and speaking (`<shift>`); the response's hidden states (not codec tokens)
drive a streaming flow-matching TTS. Turn-taking, barge-in and echo handling are learned inside that loop.

Implemented here (the reusable component, at toy scale):
- `scheduler`: `DuplexScheduler`, the time-block loop and listen/speak state machine with the paper's tokens
  (`<think>`, `<shift>`, and `<speak>` for "keep talking"); the `BlockPolicy` it asks per block; the
  embedding-to-TTS interface `StreamingSpeechGenerator` (a Protocol only) and its stand-in `ScriptedSpeech`.
- `dialogues`: generated full-duplex dialogues from espeak-ng speech (users in 8 voices with pauses inside turns,
  barge-ins, the model's own voice echoed into the microphone, stationary noise and noise bursts), played closed-loop
  by a simulated user who reacts to the model; the privileged `OraclePolicy` whose per-block tokens are the labels.
- `model`: `DuplexStateModel`, a small causal model (block fbank features of the microphone and of the model's own
  output + the current state -> GRU -> state token) and `ModelPolicy`, which streams it block by block.
- `vad`: the modular baseline, an energy VAD + fixed silence timeout (`EnergyVADPolicy`).
- `metrics`: turn-taking F1, barge-in F1 (events matched within a tolerance) and the stop latency after a barge-in.
- `data`, `task`, `check`: `DuplexDataModule`, `DuplexTask` (teacher-forced token cross-entropy) and the claim check
  (model vs VAD baseline, closed loop, on held-out dialogues).

NOT implemented: the LLM and any response text (the model only decides when to talk), the Mamba encoder (a GRU over
per-block fbank features stands in for encoder + LLM), speech generation (no TTS: `StreamingSpeechGenerator` is an
interface, and the simulation plays recorded espeak-ng responses), backchannels and context-dependent barge-in,
the paper's multi-stage training and DPO, and any real recorded conversations.
"""
