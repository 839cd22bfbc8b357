"""Regularization verdict on one task's CPU recipe (the L2 paper's claims, bundled encoder): plain
fine-tuning (DF) vs L2 towards the pretrained weights (penalty form, strengths chosen on dev; the
decoupled form with its own strengths, chosen on dev) vs EWC with each target's own Fisher, and, with
`--peft`, BitFit, LoRA, bottleneck adapters and soft prompts, all over the same seeds, paired by seed.

Strengths are chosen on dev only: the one whose mean over seeds of the dev average over every language
(the recipes' model-selection score, `avg_dev`) is highest. EWC trains one model per target language,
each with that language's masked-LM Fisher computed from XNLI's unlabelled dev text (`xlgap fisher
--from-data xnli`, so no text of the task's own sets is seen), and is compared with DF on that
language. Runs are ordinary run folders under bench/out/regularization/ (finished seeds kept,
interrupted ones resumed), so the benchmark can be stopped and restarted.

    python bench/regularization.py --data-dir ../shared/data --task udpos --peft
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path
from statistics import fmean

from scipy import stats

from benchdoc import update_section
from xlgap.config import load_config
from xlgap.report.compare import TARGET_AVG, RunScores, compare_runs, report_markdown, run_scores
from xlgap.results import load_run
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
PEFT = ("bitfit", "lora", "adapter", "prompt")


def run(recipe: str, name: str, overrides: list[str], data_dir: Path, out: Path, seeds: list[int]) -> Path:
    """Run (or finish) `configs/cpu/<recipe>.yaml` with `overrides` as run `name`; returns its folder."""
    cfg = load_config(
        ROOT / "configs" / "cpu" / f"{recipe}.yaml",
        [f"data.dir={data_dir}", f"output_dir={out}", f"seeds={seeds}", f"name={name}", *overrides],
    )
    print(f"== {name}", flush=True)
    run_experiment(cfg, resume=True)
    return cfg.run_dir


def dev_score(folder: Path) -> float:
    """Mean over seeds of the dev average over every language (the selection score)."""
    scores = run_scores(load_run(folder), split="dev")
    return fmean(fmean(by_lang[lang] for lang in [*scores.sources, *scores.targets]) for by_lang in scores.seeds.values())


def choose(folders: dict[float, Path]) -> tuple[float, dict[float, float]]:
    """The strength with the best dev score, and every strength's dev score."""
    dev = {strength: dev_score(folder) for strength, folder in folders.items()}
    return max(dev, key=dev.get), dev


def fisher_file(lang: str, data_dir: Path, out: Path) -> Path:
    """The masked-LM Fisher of `lang` from XNLI's dev text (computed once)."""
    path = out / "fisher" / f"{lang}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "xlgap", "fisher", "bundled:multilingual-e5-small", "--lang", lang,
            "--from-data", "xnli", "--data-dir", str(data_dir), "--select", "all - head - word_embeddings", "-o", str(path),
        ]
        subprocess.run(command, check=True)
    return path


def ewc_rows(df: RunScores, ewc: dict[str, RunScores]) -> list[str]:
    """One Markdown row per target: DF and EWC on that language, their paired difference and p."""
    rows = []
    for lang, scores in ewc.items():
        seeds = sorted(set(df.seeds) & set(scores.seeds))
        a = [df.seeds[s][lang] for s in seeds]
        b = [scores.seeds[s][lang] for s in seeds]
        p = stats.ttest_rel(b, a).pvalue if len(seeds) > 1 else float("nan")
        rows.append(f"| {lang} | {fmean(a):.1f} | {fmean(b):.1f} | {fmean(b) - fmean(a):+.2f} | {p:.3f} | {len(seeds)} |")
    return rows


def target_test(report, run: RunScores):
    """The paired test of `run` against the control on the target average, or None."""
    return next((t for t in report.tests.get(run.name, []) if t.language == TARGET_AVG), None)


def verdict(report, compared: list[RunScores], ewc: dict[str, RunScores]) -> list[str]:
    """One plain sentence per claim of the paper, from the measured numbers."""
    df, l2 = compared[0], compared[1]
    lines = []
    test = target_test(report, l2)
    if test is not None:
        holds = test.difference > 0 and test.p < report.alpha
        lines.append(
            f"- L2 raises the zero-shot average: {'reproduced' if holds else 'not reproduced'} here "
            f"({l2.label} - DF = {test.difference:+.2f} points, paired p = {test.p:.3f}, {test.seeds} seeds)."
        )
    if ewc:
        better = [lang for lang, scores in ewc.items() if fmean(scores.values(lang)) > fmean(df.values(lang, sorted(scores.seeds)))]
        lines.append(
            f"- EWC with a target-language Fisher does not help consistently: EWC is above DF on {len(better)} of "
            f"{len(ewc)} targets ({', '.join(better) or 'none'})."
        )
    peft = [r for r in compared if r.label in PEFT]
    if peft:
        beaten = [r.label for r in peft if l2.mean(TARGET_AVG) > r.mean(TARGET_AVG)]
        lines.append(
            f"- L2 beats the parameter-efficient baselines on the zero-shot average: {len(beaten)} of {len(peft)} "
            f"({', '.join(f'{r.label} {r.mean(TARGET_AVG):.1f}' for r in peft)}; L2 {l2.mean(TARGET_AVG):.1f})."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--task", default="udpos", help="a CPU recipe with an -l2 variant: udpos or panx")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--strengths", default="0.001,0.01,0.1,1", help="L2 penalty strengths (lambda of Eq. 1)")
    parser.add_argument("--decoupled", default="1,10,100", help="strengths of the decoupled pull ('' to skip)")
    parser.add_argument("--ewc-targets", default="de,zh,ar", help="targets that get an EWC model ('' to skip)")
    parser.add_argument("--ewc-strength", type=float, default=1000.0)
    parser.add_argument("--peft", action="store_true", help="also BitFit, LoRA, adapters and soft prompts (UD POS recipes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "regularization")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    data_dir = args.data_dir.resolve()
    task, out = args.task, args.out

    def l2_runs(mode: str, strengths: str) -> dict[float, Path]:
        values = [float(s) for s in strengths.split(",") if s]
        return {
            v: run(f"{task}-l2", f"{task}-l2-{mode}-{v:g}", [f"methods.1.strength={v}", f"methods.1.mode={mode}"], data_dir, out, seeds)
            for v in values
        }

    df_folder = run(task, f"{task}-df", [], data_dir, out, seeds)
    penalty = l2_runs("penalty", args.strengths)
    decoupled = l2_runs("decoupled", args.decoupled)
    best_penalty, dev_penalty = choose(penalty)
    compared = [run_scores(load_run(df_folder), label="DF"), run_scores(load_run(penalty[best_penalty]), label=f"L2 {best_penalty:g}")]
    lines = [
        f"## Regularization: DF vs L2 vs EWC on `configs/cpu/{task}.yaml` (bundled encoder, CPU)",
        "",
        f"{len(seeds)} seeds per method, paired by seed. L2 (Eq. 1) over `all - head - word_embeddings` (the word",
        "embeddings are frozen in the recipe). Strengths chosen on dev: the best mean over seeds of the dev average",
        "over every language. Dev score of each strength:",
        "",
        "| form | " + " | ".join(f"{v:g}" for v in penalty) + " |",
        "|---|" + "---|" * len(penalty),
        "| penalty | " + " | ".join(f"{dev_penalty[v]:.2f}" for v in penalty) + " |",
    ]
    if decoupled:
        best_decoupled, dev_decoupled = choose(decoupled)
        compared.append(run_scores(load_run(decoupled[best_decoupled]), label=f"L2 decoupled {best_decoupled:g}"))
        lines += [
            "",
            "| form | " + " | ".join(f"{v:g}" for v in decoupled) + " |",
            "|---|" + "---|" * len(decoupled),
            "| decoupled | " + " | ".join(f"{dev_decoupled[v]:.2f}" for v in decoupled) + " |",
        ]
    if args.peft:
        compared += [run_scores(load_run(run(f"{task}-{m}", f"{task}-{m}", [], data_dir, out, seeds)), label=m) for m in PEFT]
    report = compare_runs(compared, control="DF")
    lines += ["", "The `xlgap compare` output against DF (test):", "", report_markdown(report).split("\n", 1)[1].replace("\n## ", "\n### ")]
    targets = [t for t in args.ewc_targets.split(",") if t]
    ewc: dict[str, RunScores] = {}
    if targets:
        for lang in targets:
            overrides = [f"data.target_languages=[{lang}]", f"methods.1.fisher={fisher_file(lang, data_dir, out)}", f"methods.1.strength={args.ewc_strength}"]
            ewc[lang] = run_scores(load_run(run(f"{task}-ewc", f"{task}-ewc-{lang}", overrides, data_dir, out, seeds)))
        lines += [
            "",
            f"### EWC (Eq. 2, strength {args.ewc_strength:g}): one model per target, with that language's masked-LM Fisher",
            "",
            "| target | DF | EWC | EWC - DF | paired p | seeds |",
            "|---|---|---|---|---|---|",
            *ewc_rows(compared[0], ewc),
        ]
    lines[1:1] = ["", "Verdict (generated from the numbers below):", "", *verdict(report, compared, ewc)]
    body = "\n".join(lines)
    print(body)
    update_section(f"regularization-{task}", body)


if __name__ == "__main__":
    main()
