"""Speech data: audio I/O, espeak-ng corpora, Kaldi data directories, real recordings, features and tokenizers."""
