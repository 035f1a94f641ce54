"""Long-sequence models behind one `TokenMixer` interface: attention, S4, S4D, Mamba, SGConv; the Long Range Arena
harness; self-pretraining; LightSeq sequence parallelism; LongMem."""

from paperzoo.efficiency.sequence.mixer import TokenMixer, build_mixer, mixer_names, register_mixer

__all__ = ["TokenMixer", "build_mixer", "mixer_names", "register_mixer"]
