"""Two students much smaller than the teacher, for timing the nightly run as distillation usually has it.

The demo's student keeps 28 of the teacher's 30 layers, so the teacher's share of a first run is at
most about half and an unchanged teacher cannot save more (benchmarks/README.md). Real students are
several times smaller than their teacher. These keep `--keep` of the teacher's layers (the first and
the last halves, and in the second student one layer fewer at the front: two distinct fingerprints),
untrained: they are for timing only, their text is poor.

    python benchmarks/make_small_students.py --teacher /work/models/teacher --out /tmp/small --keep 8
    # then: bench_engine.py --student /tmp/small/student --student2 /tmp/small/student2 --setups kd,nightly
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path


def kept_layers(n_layers: int, keep: int, shift: int = 0) -> list[int]:
    """The first keep//2 layers (starting at `shift`) and the last keep - keep//2."""
    head = list(range(shift, shift + keep // 2))
    tail = list(range(n_layers - (keep - keep // 2), n_layers))
    return head + tail


def make(teacher: Path, out: Path, keep: int, shift: int) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.demo.prune import remove_layers

    model = AutoModelForCausalLM.from_pretrained(teacher, torch_dtype="float32")
    n_layers = int(model.config.num_hidden_layers)
    keep_set = set(kept_layers(n_layers, keep, shift))
    remove_layers(model, [i for i in range(n_layers) if i not in keep_set])
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher).save_pretrained(out)
    print(f"{out}: layers {sorted(keep_set)} of {n_layers}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--keep", type=int, default=8, help="layers each student keeps")
    args = p.parse_args(argv)
    make(args.teacher, args.out / "student", args.keep, shift=0)
    make(args.teacher, args.out / "student2", args.keep, shift=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
