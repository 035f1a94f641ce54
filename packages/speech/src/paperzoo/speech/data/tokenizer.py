"""Token ids shared by every recognizer, and the id -> text mapping the metrics use.

A vocabulary is a list of pieces indexed by id. The first three are fixed: 0 is the CTC blank (and the padding
of feature-side tensors), 1 is <sos/eos> for autoregressive decoding, 2 is <unk>. Word boundaries are the piece
"▁" (characters) or a leading "▁" (BPE, metaspace style), so decoding is one rule for both.
"""

from collections.abc import Iterable, Sequence

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
UNK = "<unk>"
SPECIALS = (BLANK, SOS_EOS, UNK)
BLANK_ID, SOS_EOS_ID, UNK_ID = 0, 1, 2
#: the padding of target token tensors; losses ignore it.
IGNORE_ID = -1
WORD_BOUNDARY = "▁"


def ids_to_text(vocabulary: Sequence[str], ids: Iterable[int]) -> str:
    """The text of token `ids` (special ids are skipped): pieces joined, "▁" read as a space."""
    pieces = (vocabulary[i] for i in ids if i >= len(SPECIALS))
    return " ".join("".join(pieces).replace(WORD_BOUNDARY, " ").split())
