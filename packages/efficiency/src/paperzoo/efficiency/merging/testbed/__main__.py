"""`python -m paperzoo.efficiency.merging.testbed [--quick] [--only vision|text]`: build (or load) the merging
testbeds and print every expert on every task, the base backbone's linear probes, plain averaging of the experts,
the pairwise cosines of the task vectors and the build times."""

import argparse
import time

import torch

from paperzoo.efficiency.merging.testbed.report import text_report, vision_report
from paperzoo.efficiency.merging.testbed.text import TextRecipe, text_testbed
from paperzoo.efficiency.merging.testbed.vision import VisionRecipe, vision_testbed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m paperzoo.efficiency.merging.testbed", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="the quick recipes instead of the full ones")
    parser.add_argument("--only", choices=("vision", "text"), help="build one track only")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads of the evaluation (builds always use one)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.only in (None, "vision"):
        start = time.perf_counter()
        testbed = vision_testbed(VisionRecipe.quick() if args.quick else VisionRecipe.full())
        print(vision_report(testbed, time.perf_counter() - start))
    if args.only in (None, "text"):
        start = time.perf_counter()
        testbed = text_testbed(TextRecipe.quick() if args.quick else TextRecipe.full())
        print(text_report(testbed, time.perf_counter() - start))


if __name__ == "__main__":
    main()
