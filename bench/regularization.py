"""Regularization verdict on one task's CPU recipe (the L2 paper's claims, bundled encoder): plain
fine-tuning (DF) vs L2 towards the pretrained weights (penalty form, strengths chosen on dev; the
decoupled form with its own strengths, chosen on dev) vs EWC with each target's own Fisher, and, with
`--peft`, BitFit, LoRA, bottleneck adapters and soft prompts, all over the same seeds, paired by seed.

Strengths are chosen on dev only: the one whose mean over seeds of the dev average over every language
(the recipes' model-selection score, `avg_dev`) is highest. EWC trains one model per target language,
each with that language's masked-LM Fisher computed from XNLI's unlabelled dev text (`xlgap fisher
--from-data xnli`, so no text of the task's own sets is seen), and is compared with DF on that
language. With `--frechet`, the Fréchet distance (Eq. 3) between the English Fisher and each target's
(XNLI text again) is correlated with DF's per-language test scores (`xlgap fisher-distance --run`).
Strengths may be chosen on fewer seeds (`--choose-seeds`): the chosen one is then extended to every
seed. `--set KEY=VALUE` applies to every run (e.g. a smaller test set), and the section says so. Runs
are ordinary run folders under bench/out/regularization/ (finished seeds kept, interrupted ones
resumed, more seeds added to a finished run), so the benchmark can be stopped and restarted.

    python bench/regularization.py --data-dir ../shared/data --task udpos --peft --frechet
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import fmean

from scipy import stats

from benchdoc import add_override_option, overrides_note, update_section
from xlgap.config import load_config
from xlgap.data.sources import available_languages
from xlgap.report.compare import TARGET_AVG, RunScores, compare_runs, report_markdown, run_scores
from xlgap.results import load_run
from xlgap.train.run import run_experiment

ROOT = Path(__file__).resolve().parents[1]
PEFT = ("bitfit", "lora", "adapter", "prompt")
FISHER_TEXT = "xnli"
"""The unlabelled text of every Fisher: another data set than the task's, so that no task text is seen."""


def run(recipe: str, name: str, overrides: list[str], data_dir: Path, out: Path, seeds: list[int]) -> Path:
    """Run (or finish) `configs/cpu/<recipe>.yaml` with `overrides` as run `name` on `seeds` (and on the
    seeds the folder already has); returns its folder."""
    if (out / name / "config.yaml").exists():
        seeds = sorted(set(seeds) | set(load_run(out / name).config["seeds"]))
    cfg = load_config(
        ROOT / "configs" / "cpu" / f"{recipe}.yaml",
        [f"data.dir={data_dir}", f"output_dir={out}", f"seeds={seeds}", f"name={name}", *overrides],
    )
    print(f"== {name}", flush=True)
    run_experiment(cfg, resume=True)
    return cfg.run_dir


def dev_score(folder: Path, seeds: list[int]) -> float:
    """Mean over `seeds` of the dev average over every language (the selection score)."""
    scores = run_scores(load_run(folder), split="dev")
    return fmean(fmean(scores.seeds[seed][lang] for lang in [*scores.sources, *scores.targets]) for seed in seeds)


def choose(folders: dict[float, Path], seeds: list[int]) -> tuple[float, dict[float, float]]:
    """The strength with the best dev score on `seeds`, and every strength's dev score."""
    dev = {strength: dev_score(folder, seeds) for strength, folder in folders.items()}
    return max(dev, key=dev.get), dev


def fisher_file(lang: str, data_dir: Path, out: Path, examples: int) -> Path:
    """The masked-LM Fisher of `lang` from `examples` XNLI dev texts (computed once)."""
    path = out / "fisher" / f"{lang}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "xlgap", "fisher", "bundled:multilingual-e5-small", "--lang", lang, "--examples", str(examples),
            "--from-data", FISHER_TEXT, "--data-dir", str(data_dir), "--select", "all - head - word_embeddings", "-o", str(path),
        ]
        subprocess.run(command, check=True)
    return path


def edge_note(best: float, dev: dict[float, float]) -> list[str]:
    """A warning line when the chosen strength is the grid's smallest or largest (the optimum may lie beyond)."""
    if len(dev) > 1 and best in (min(dev), max(dev)):
        return ["", f"The chosen strength {best:g} is at the edge of the grid: the best strength may lie beyond it."]
    return []


def frechet_lines(df_folder: Path, task: str, targets: list[str], data_dir: Path, out: Path, examples: int) -> list[str]:
    """The Fréchet section: every target with a test set and Fisher text, correlated with DF's test scores."""
    languages = [
        lang for lang in targets
        if lang in available_languages(task, "test", data_dir) and lang in available_languages(FISHER_TEXT, "dev", data_dir)
    ]
    fishers = [str(fisher_file(lang, data_dir, out, examples)) for lang in ["en", *languages]]
    report = out / "frechet"
    subprocess.run([sys.executable, "-m", "xlgap", "fisher-distance", *fishers, "--run", str(df_folder), "--out", str(report)], check=True)
    figure = ROOT / "docs" / "figures" / f"frechet-{task}.png"
    shutil.copyfile(report / "frechet.png", figure)
    return [
        "",
        f"### Fréchet distance (Eq. 3) between the English Fisher and each target's, against DF's test score ({len(languages)} languages)",
        "",
        f"Masked-LM Fishers from {examples} {FISHER_TEXT.upper()} dev texts ({', '.join(languages)}: the targets with a test set and",
        f"{FISHER_TEXT.upper()} text), `xlgap fisher-distance --run` on the DF run. The paper (Table 5) reports a",
        "negative correlation: the farther a language's Fisher from English, the lower its zero-shot score.",
        "",
        *(report / "frechet.md").read_text(encoding="utf-8").strip().split("\n"),
        "",
        f"![Fréchet distance against test score](figures/{figure.name})",
    ]


def cost_lines(compared: list[RunScores], out: Path) -> list[str]:
    """Each method's training time per seed (probes, checkpoints and evaluation excluded) against DF's,
    raw and per second of the same run's final evaluation: the evaluation is the same work for every
    method, so that ratio cancels the drift of a shared machine's speed between runs done at different
    times (measured here: the same final evaluation took 23 to 32 s within one hour)."""
    seconds, relative = {}, {}
    for r in compared:
        results = load_run(out / r.name).results
        seconds[r.label] = fmean(result["wall_seconds"]["training"] for result in results)
        relative[r.label] = fmean(result["wall_seconds"]["training"] / result["wall_seconds"]["final_evaluation"] for result in results)
    base, base_relative = seconds[compared[0].label], relative[compared[0].label]
    return [
        "",
        "Training time per seed (`wall_seconds.training` of results.json, probes and evaluation excluded), and per",
        "second of the same run's final evaluation (the same work for every method, so it cancels the machine's drift):",
        "",
        "| method | s / seed | vs DF | training / final evaluation | vs DF |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {value:.1f} | {value / base:.2f}x | {relative[label]:.2f} | {relative[label] / base_relative:.2f}x |"
            for label, value in seconds.items()
        ),
    ]


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


def verdict(report, compared: list[RunScores], ewc: dict[str, RunScores], frechet: dict | None) -> list[str]:
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
        holds = len(better) < len(ewc)
        lines.append(
            f"- EWC with a target-language Fisher does not help consistently: {'reproduced' if holds else 'not reproduced'} "
            f"here (EWC above DF on {len(better)} of {len(ewc)} targets: {', '.join(better) or 'none'})."
        )
    if frechet is not None:
        holds = frechet["spearman"] < 0 and frechet["spearman_p"] < report.alpha
        lines.append(
            f"- The Fréchet distance to the English Fisher correlates (negatively) with the zero-shot score: "
            f"{'reproduced' if holds else 'not reproduced'} here (Spearman {frechet['spearman']:+.2f}, p = {frechet['spearman_p']:.3f}; "
            f"Pearson {frechet['pearson']:+.2f}, p = {frechet['pearson_p']:.3f}; {len(frechet['languages'])} languages)."
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
    parser.add_argument("--ewc-targets", default="zh,ar,hi", help="targets that get an EWC model ('' to skip)")
    parser.add_argument("--ewc-strength", type=float, default=1000.0)
    parser.add_argument("--fisher-examples", type=int, default=500, help="texts per Fisher (xlgap fisher --examples)")
    parser.add_argument("--peft", action="store_true", help="also BitFit, LoRA, adapters and soft prompts (UD POS recipes)")
    parser.add_argument("--peft-seeds", default=None, help="seeds of the parameter-efficient runs (default: --seeds)")
    parser.add_argument("--choose-seeds", default=None, help="seeds the strengths are chosen on (default: --seeds)")
    parser.add_argument("--frechet", action="store_true", help="also the Fréchet-distance correlation over the targets")
    add_override_option(parser)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "regularization")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    def seed_list(text: str | None) -> list[int]:
        return [int(s) for s in (text or args.seeds).split(",")]

    seeds, choose_seeds, peft_seeds = seed_list(args.seeds), seed_list(args.choose_seeds), seed_list(args.peft_seeds)
    data_dir = args.data_dir.resolve()
    task, out = args.task, args.out

    def l2_run(mode: str, strength: float, run_seeds: list[int]) -> Path:
        overrides = [f"methods.1.strength={strength}", f"methods.1.mode={mode}", *args.set]
        return run(f"{task}-l2", f"{task}-l2-{mode}-{strength:g}", overrides, data_dir, out, run_seeds)

    def chosen_l2(mode: str, strengths: str) -> tuple[float, dict[float, float]] | None:
        """Every strength on the choice seeds, then the best one (on dev) on every seed."""
        folders = {v: l2_run(mode, v, choose_seeds) for v in (float(s) for s in strengths.split(",") if s)}
        if not folders:
            return None
        best, dev = choose(folders, choose_seeds)
        l2_run(mode, best, sorted(set(choose_seeds) | set(seeds)))
        return best, dev

    df_folder = run(task, f"{task}-df", args.set, data_dir, out, seeds)
    best_penalty, dev_penalty = chosen_l2("penalty", args.strengths)
    decoupled = chosen_l2("decoupled", args.decoupled)

    def folder(mode: str, strength: float) -> Path:
        return out / f"{task}-l2-{mode}-{strength:g}"

    compared = [run_scores(load_run(df_folder), label="DF"), run_scores(load_run(folder("penalty", best_penalty)), label=f"L2 {best_penalty:g}")]
    lines = [
        f"## Regularization: DF vs L2 vs EWC on `configs/cpu/{task}.yaml` (bundled encoder, CPU)",
        "",
        f"Seeds {', '.join(map(str, seeds))} for DF, L2 and EWC, paired by seed"
        + (f"; seeds {', '.join(map(str, peft_seeds))} for the parameter-efficient runs" if args.peft else "") + ".",
        "L2 (Eq. 1) over `all - head - word_embeddings` (the word embeddings are frozen in the recipe).",
        f"Strengths chosen on dev (seeds {', '.join(map(str, choose_seeds))}): the best mean over seeds of the dev",
        "average over every language; the chosen one then runs on every seed."
        + overrides_note(args.set),
        "The EWC strength and the parameter-efficient methods' lr are their recipes' (not chosen on dev).",
        "Dev score of each strength:",
        "",
        "| form | " + " | ".join(f"{v:g}" for v in dev_penalty) + " |",
        "|---|" + "---|" * len(dev_penalty),
        "| penalty | " + " | ".join(f"{dev_penalty[v]:.2f}" for v in dev_penalty) + " |",
        *edge_note(best_penalty, dev_penalty),
    ]
    if decoupled:
        best_decoupled, dev_decoupled = decoupled
        compared.append(run_scores(load_run(folder("decoupled", best_decoupled)), label=f"L2 decoupled {best_decoupled:g}"))
        lines += [
            "",
            "| form | " + " | ".join(f"{v:g}" for v in dev_decoupled) + " |",
            "|---|" + "---|" * len(dev_decoupled),
            "| decoupled | " + " | ".join(f"{dev_decoupled[v]:.2f}" for v in dev_decoupled) + " |",
            *edge_note(best_decoupled, dev_decoupled),
        ]
    if args.peft:
        compared += [run_scores(load_run(run(f"{task}-{m}", f"{task}-{m}", args.set, data_dir, out, peft_seeds)), label=m) for m in PEFT]
    report = compare_runs(compared, control="DF")
    lines += cost_lines(compared, out)
    lines += ["", "The `xlgap compare` output against DF (test):", "", report_markdown(report).split("\n", 1)[1].replace("\n## ", "\n### ")]
    targets = [t for t in args.ewc_targets.split(",") if t]
    ewc: dict[str, RunScores] = {}
    if targets:
        for lang in targets:
            overrides = [f"data.target_languages=[{lang}]", f"methods.1.fisher={fisher_file(lang, data_dir, out, args.fisher_examples)}", f"methods.1.strength={args.ewc_strength}", *args.set]
            ewc[lang] = run_scores(load_run(run(f"{task}-ewc", f"{task}-ewc-{lang}", overrides, data_dir, out, seeds)))
        lines += [
            "",
            f"### EWC (Eq. 2, strength {args.ewc_strength:g}): one model per target, with that language's masked-LM Fisher",
            "",
            "| target | DF | EWC | EWC - DF | paired p | seeds |",
            "|---|---|---|---|---|---|",
            *ewc_rows(compared[0], ewc),
        ]
    frechet = None
    if args.frechet:
        lines += frechet_lines(df_folder, task, compared[0].targets, data_dir, out, args.fisher_examples)
        frechet = json.loads((out / "frechet" / "frechet.json").read_text(encoding="utf-8"))["correlation"]
    lines[1:1] = ["", "Verdict (generated from the numbers below):", "", *verdict(report, compared, ewc, frechet)]
    body = "\n".join(lines)
    print(body)
    update_section(f"regularization-{task}", body)


if __name__ == "__main__":
    main()
