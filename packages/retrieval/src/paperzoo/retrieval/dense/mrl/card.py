"""The method card of Matryoshka Representation Learning (CATALOG 120)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="mrl",
    number=120,
    title="Matryoshka Representation Learning",
    arxiv="2205.13147",
    kind="train",
    domain="retrieval",
    entry_points=(
        "paperzoo.retrieval.dense.mrl.model:matryoshka_loss",
        "paperzoo.retrieval.dense.mrl.model:SentenceEncoder",
        "paperzoo.retrieval.dense.mrl.retrieval:adaptive_retrieve",
        "paperzoo.retrieval.dense.mrl.retrieval:funnel_retrieve",
        "paperzoo.retrieval.data.module:RetrievalDataModule",
    ),
    claim=(
        "A MiniLM fine-tuned with the Matryoshka loss keeps >= 90% of its full-dimension nDCG@10 at a sixteenth of "
        "the dimension, beats truncating the same model fine-tuned without MRL at every nested dimension, and "
        "adaptive retrieval (low-d shortlist, full-d rerank) matches full-dimension accuracy at lower cost."
    ),
    reference_code="https://github.com/RAIVNLab/MRL; sentence-transformers MatryoshkaLoss",
    config_package="paperzoo.retrieval.dense.mrl.configs",
    check="paperzoo.retrieval.dense.mrl.check:check",
    task="paperzoo.retrieval.dense.mrl.task:MRLTask",
)
