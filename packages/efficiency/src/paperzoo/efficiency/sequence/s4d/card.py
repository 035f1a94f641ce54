"""The method card of S4D (CATALOG 66)."""

from paperzoo.core.card import MethodCard

CARD = MethodCard(
    key="s4d",
    number=66,
    title="On the Parameterization and Initialization of Diagonal State Space Models",
    arxiv="2206.11893",
    kind="train",
    domain="efficiency",
    entry_points=(
        "paperzoo.efficiency.sequence.s4d.model:S4DMixer",
        "paperzoo.efficiency.sequence.ssm:s4d_init",
        "paperzoo.efficiency.sequence.ssm:discretize_diagonal",
        "paperzoo.efficiency.sequence.ssm:vandermonde_kernel",
        "paperzoo.efficiency.sequence.ssm:log_dt_init",
        "paperzoo.efficiency.sequence.ssm:SSMAdamW",
        "paperzoo.efficiency.sequence.backbone:SequenceModel",
        "paperzoo.efficiency.sequence.lra.listops:ListOpsDataModule",
        "paperzoo.efficiency.sequence.lra.pathfinder:PathfinderDataModule",
    ),
    claim=(
        "A diagonal SSM (S4D: ZOH or bilinear, Vandermonde kernel) with the S4D-Lin, S4D-Inv or S4D-LegS "
        "initialisation matches S4 on long-range tasks, and the initialisation is what matters: structured ones beat "
        "random ones."
    ),
    reference_code="https://github.com/state-spaces/s4 (models/s4/s4d.py)",
    config_package="paperzoo.efficiency.sequence.s4d.configs",
    check="paperzoo.efficiency.sequence.s4d.check:check",
    task="paperzoo.efficiency.sequence.task:SequenceClassificationTask",
)
