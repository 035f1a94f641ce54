"""The method card of the merge tool (`paperzoo merge`): the streaming task-arithmetic engine behind the merging papers.

Its claim is the tool's own (no paper's): a merge streams tensor by tensor, so memory follows the largest tensor, not
the model; `paperzoo check merge` measures it (`paperzoo.efficiency.merging.checks.merge_tool`).
"""

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
        "paperzoo.efficiency.merging.procedure:merge_iter",
        "paperzoo.efficiency.merging.procedure:method_names",
        "paperzoo.efficiency.merging.procedure:method_parameters",
        "paperzoo.efficiency.merging.config:validate",
        "paperzoo.efficiency.merging.config:load_config",
        "paperzoo.efficiency.merging.io:inspect",
        "paperzoo.efficiency.merging.io:LazyStateDict",
        "paperzoo.efficiency.merging.io:save_safetensors",
        "paperzoo.efficiency.merging.io:save_safetensors_stream",
        "paperzoo.efficiency.merging.run:merge_models",
    ),
    claim=(
        "Merging K models streams tensor by tensor: peak RSS stays near K x the largest tensor plus the output "
        "writer, not K x the model."
    ),
    reference_code="https://github.com/arcee-ai/mergekit",
    config_package="paperzoo.efficiency.merging.configs",
    check="paperzoo.efficiency.merging.checks.merge_tool:check",
    run="paperzoo.efficiency.merging.run:merge_models",
)
