"""The method card of the merge tool (`paperzoo merge`): the task-arithmetic engine behind the merging papers."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="merge",
    number=0,
    title="paperzoo merge: task arithmetic, TIES-Merging and DARE in one streaming engine",
    arxiv="2306.01708",
    kind="posthoc",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.merging.procedure:merge",
        "paperzoo.efficiency.merging.procedure:method_names",
        "paperzoo.efficiency.merging.procedure:method_parameters",
        "paperzoo.efficiency.merging.config:validate",
        "paperzoo.efficiency.merging.config:load_config",
        "paperzoo.efficiency.merging.io:inspect",
        "paperzoo.efficiency.merging.io:LazyStateDict",
        "paperzoo.efficiency.merging.io:save_safetensors",
        "paperzoo.efficiency.merging.run:merge_models",
    ),
    claim=(
        "Merging fine-tuned models by trimming, sign election and disjoint mean (TIES) keeps more of each task's "
        "accuracy than averaging or plain task arithmetic."
    ),
    reference_code="https://github.com/arcee-ai/mergekit",
    config_package="paperzoo.efficiency.merging.configs",
    run="paperzoo.efficiency.merging.run:merge_models",
)
