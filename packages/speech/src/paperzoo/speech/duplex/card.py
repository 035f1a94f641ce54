"""The method card of SALMONN-omni's duplex component (CATALOG 1)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="salmonn_omni",
    number=1,
    title="SALMONN-omni: A Codec-free LLM for Full-duplex Speech Understanding and Generation",
    arxiv="2411.18138",
    kind="component",
    domain="speech",
    entry_points=(
        "paperzoo.speech.duplex.scheduler:DuplexScheduler",
        "paperzoo.speech.duplex.scheduler:StreamingSpeechGenerator",
        "paperzoo.speech.duplex.scheduler:ScriptedSpeech",
        "paperzoo.speech.duplex.model:DuplexStateModel",
        "paperzoo.speech.duplex.model:ModelPolicy",
        "paperzoo.speech.duplex.vad:EnergyVADPolicy",
        "paperzoo.speech.duplex.dialogues:simulate",
        "paperzoo.speech.duplex.dialogues:OraclePolicy",
        "paperzoo.speech.duplex.metrics:score_dialogues",
        "paperzoo.speech.duplex.data:DuplexDataModule",
    ),
    claim=(
        "A model that reads its microphone and its own output stream per time block and emits <think>/<shift> state "
        "tokens handles turn-taking and barge-in (with the echo of its own voice and background noise in the "
        "microphone) better than a modular energy-VAD + silence-timeout pipeline."
    ),
    reference_code="https://github.com/bytedance/SALMONN (no omni code published; facts from the paper)",
    config_package="paperzoo.speech.duplex.configs",
    check="paperzoo.speech.duplex.check:check",
    task="paperzoo.speech.duplex.task:DuplexTask",
)
