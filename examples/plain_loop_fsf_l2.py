"""The same methods in a plain PyTorch training loop: no Trainer, no xlgap runner.

What `XlgapTrainer` does for you, written out: one optimizer group per combination of method groups
(`optimizer_groups`), the group's learning rate = schedule x static scale x the methods' dynamic
multiplier for this update (`lr_multipliers`, from the losses recorded so far), the methods' penalty
added to the loss, and `post_step` after the optimizer step.

    python examples/plain_loop_fsf_l2.py --model xlm-roberta-base --train train-en.tsv --output out/
"""

from __future__ import annotations

import json

import torch
from trainer_fsf_l2 import encode_tagged, example_arguments, read_tagged
from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

from xlgap.methods import L2, Compose, FineTuningSlowFast, PrepareContext, TrainingStats
from xlgap.methods.base import ReferenceWeights, group_multiplier, optimizer_groups


def main() -> None:
    parser = example_arguments(__doc__.splitlines()[0])
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()
    torch.manual_seed(1)

    sentences = read_tagged(args.train)
    labels = sorted({t for _, tags in sentences for t in tags})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = encode_tagged(tokenizer, sentences, labels)
    collate = DataCollatorForTokenClassification(tokenizer)
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(labels))

    method = Compose(FineTuningSlowFast(window=args.window, threshold="auto"), L2(strength=0.01))
    references = ReferenceWeights.capture(model, method.reference_parameters(model))
    method.prepare(model, PrepareContext(seed=1, references=references))
    named = dict(model.named_parameters())
    specs = optimizer_groups(named.items(), method.param_groups(model), set(), weight_decay=0.0)
    optimizer = torch.optim.AdamW([{"params": [named[n] for n in s.params], "lr": args.lr * s.scale} for s in specs])
    stats = TrainingStats(total_steps=args.steps)
    log = []
    model.train()
    for step in range(args.steps):
        schedule = args.lr * (1 - step / args.steps)  # linear decay, no warm-up
        multipliers = method.lr_multipliers(step, stats)
        for group, spec in zip(optimizer.param_groups, specs, strict=True):
            group["lr"] = schedule * spec.scale * group_multiplier(spec.member_of, multipliers)
        batch = collate([rows[(step * 8 + i) % len(rows)] for i in range(8)])
        loss = model(**batch).loss
        penalty = method.penalty(model)
        total = loss + penalty if penalty is not None else loss
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        lr_of = {n: g["lr"] for g, s in zip(optimizer.param_groups, specs, strict=True) for n in s.params}
        method.post_step(model, lr_of.get)
        stats.losses.append(float(loss))
        log.append({"step": step + 1, "loss": float(loss), "penalty": float(penalty) if penalty is not None else None, "multipliers": multipliers})
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "training.json").write_text(json.dumps({"log": log, "report": method.report(stats)}, indent=1))
    print(f"trained {args.steps} updates; FSF phase P1 covered {method.report(stats)['fsf.p1_share']:.0%}")


if __name__ == "__main__":
    main()
