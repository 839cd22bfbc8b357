"""Multi-source fine-tuning with LF-MLF (or another gradient combiner), FSF and L2 in a plain PyTorch
loop: no Trainer, no xlgap runner.

Every update takes a batch of each source language's file, one gradient per language into a
`GradientBuffer`, asks the combiner for weights from their Gram matrices, writes the combined gradient
into `.grad`, adds the L2 penalty's gradient, and steps; FSF's multipliers set each group's lr.

    python examples/plain_loop_lf_mlf.py --model xlm-roberta-base --train en.tsv --train de.tsv --output out/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from trainer_fsf_l2 import encode_tagged, read_tagged
from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification

from xlgap.combiners import UpdateGradients, build_combiner
from xlgap.methods import L2, Compose, FineTuningSlowFast, PrepareContext, TrainingStats
from xlgap.methods.base import ReferenceWeights, group_multiplier, optimizer_groups
from xlgap.train.multi_source import GradientBuffer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model id or folder")
    parser.add_argument("--train", type=Path, action="append", required=True, help="a token<TAB>tag file per source language")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--combiner", default="lf-mlf", help="uniform, lf-mlf, pcgrad, gradvac or mgda")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=8, help="sentences per language and update")
    parser.add_argument("--window", type=int, default=10, help="FSF's loss window (the paper: 100 updates)")
    parser.add_argument("--lr", type=float, default=2e-5)
    args = parser.parse_args()
    torch.manual_seed(1)

    languages = [read_tagged(path) for path in args.train]
    labels = sorted({t for sentences in languages for _, tags in sentences for t in tags})
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = [encode_tagged(tokenizer, sentences, labels) for sentences in languages]
    collate = DataCollatorForTokenClassification(tokenizer)
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(labels))

    method = Compose(FineTuningSlowFast(window=args.window, threshold="auto"), L2(strength=0.01))
    method.prepare(model, PrepareContext(seed=1, references=ReferenceWeights.capture(model, method.reference_parameters(model))))
    named = dict(model.named_parameters())
    specs = optimizer_groups(named.items(), method.param_groups(model), set(), weight_decay=0.0)
    optimizer = torch.optim.AdamW([{"params": [named[n] for n in s.params], "lr": args.lr * s.scale} for s in specs])
    combiner = build_combiner(args.combiner)
    buffer = GradientBuffer(model, len(rows))  # [T, P] over the trainable weights, allocated once
    stats = TrainingStats(total_steps=args.steps)
    log = []
    model.train()
    for step in range(args.steps):
        multipliers = method.lr_multipliers(step, stats)
        for group, spec in zip(optimizer.param_groups, specs, strict=True):
            group["lr"] = args.lr * (1 - step / args.steps) * spec.scale * group_multiplier(spec.member_of, multipliers)
        buffer.zero()
        losses = []
        for t, language in enumerate(rows):
            batch = collate([language[(step * args.batch + i) % len(language)] for i in range(args.batch)])
            loss = model(**batch).loss
            buffer.add(t, torch.autograd.grad(loss, buffer.backward_inputs, allow_unused=True))
            losses.append(float(loss))
        weights = combiner.weights(UpdateGradients(buffer.layer_grams(), step, 1, buffer.dot, buffer.layers))
        direction = buffer.combine(weights)
        combiner.applied(direction)
        buffer.write_grad(direction)
        penalty = method.penalty(model)
        if penalty is not None:
            penalty.backward()  # adds the penalty's gradient to the combined one
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stats.losses.append(sum(losses) / len(losses))
        log.append({"step": step + 1, "losses": losses, "weights": weights.tolist(), "multipliers": multipliers,
                    "penalty": float(penalty) if penalty is not None else None})
    args.output.mkdir(parents=True, exist_ok=True)
    report = {**method.report(stats), "combiner": combiner.report()}
    (args.output / "training.json").write_text(json.dumps({"log": log, "report": report}, indent=1))
    print(f"trained {args.steps} updates on {len(rows)} languages with {combiner.name}; FSF phase P1 covered {report['fsf.p1_share']:.0%}")


if __name__ == "__main__":
    main()
