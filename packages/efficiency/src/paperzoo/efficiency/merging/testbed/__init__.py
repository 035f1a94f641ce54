"""The merging testbed: small, offline stand-ins for the task-arithmetic benchmarks of the model-merging papers.

Vision: a `VisionNet` backbone pretrained on Fashion-MNIST classes no expert uses, and one expert per task of
`VISION_TASKS` fine-tuned from it (`vision_testbed`). Text: a byte-level `GPT` pretrained on a mix of
`TEXT_CORPORA` and one full fine-tune per corpus (`text_testbed`). Both are built once per recipe and cached as
safetensors files; `python -m paperzoo.efficiency.merging.testbed [--quick]` builds both and prints every expert on
every task. Data, sources and licences: `testbed.data`; recipes: `testbed.vision`, `testbed.text`.
"""

from paperzoo.efficiency.merging.testbed import data
from paperzoo.efficiency.merging.testbed.build import VERSION, StateDict
from paperzoo.efficiency.merging.testbed.data import (
    PRETRAIN_CLASSES,
    TEXT_CORPORA,
    VISION_TASKS,
    load_corpus,
    load_pretrain,
    load_task,
    num_classes,
)
from paperzoo.efficiency.merging.testbed.text import TextRecipe, TextTestbed, text_testbed
from paperzoo.efficiency.merging.testbed.vision import VisionNet, VisionRecipe, VisionTestbed, vision_testbed

__all__ = [
    "PRETRAIN_CLASSES",
    "TEXT_CORPORA",
    "VERSION",
    "VISION_TASKS",
    "StateDict",
    "TextRecipe",
    "TextTestbed",
    "VisionNet",
    "VisionRecipe",
    "VisionTestbed",
    "data",
    "load_corpus",
    "load_pretrain",
    "load_task",
    "num_classes",
    "text_testbed",
    "vision_testbed",
]
