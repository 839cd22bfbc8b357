"""Are the differences between runs real? Per-language paired t-tests across seeds, seed-bootstrap
confidence intervals, the Friedman test with the Bonferroni-Dunn post-hoc against a control and its
critical-difference diagram (the evaluation of Mao et al., NeurIPS 2022, Sec. 5 and Figure 2; Demšar,
"Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 2006, Sec. 3.2.2), and the relative
fine-tuning score R_T of multi-source runs.

How the numbers are treated (settled here; peers pool seeds as independent observations or average them
away):
- seeds are replicates: a run's score of a language is a list over its seeds; two runs are compared by a
  paired t-test over the seeds they share (`scipy.stats.ttest_rel`), per language, with Holm's correction
  over the languages of one comparison (`statsmodels`), and separately (uncorrected, the primary
  endpoints) on the target average and the gap;
- languages, and settings (task and source languages), are blocks: the Friedman test ranks the methods
  within every (setting, target language) block by their mean over seeds (`scipy.stats.friedmanchisquare`);
  the Bonferroni-Dunn post-hoc compares every method with the control by z = (R_i - R_c) / sqrt(k (k + 1) /
  6 N) (`scikit_posthocs.posthoc_siegel_friedman`, the same z test), Bonferroni-corrected over the k - 1
  comparisons; the critical difference is CD = z_{1 - alpha / (2 (k - 1))} sqrt(k (k + 1) / 6 N);
- confidence intervals of the target average and the gap are percentile bootstraps over seeds
  (`scipy.stats.bootstrap`, 10,000 resamples): with 3 seeds they are wide, which is the point;
- R_T = mean_t S_t^multi / S_t^single over the sources t of a multi-source run, with S_t^single the source
  score of the single-source (SLF) run of t, both means over seeds.

The diagram is drawn here with matplotlib: scikit-posthocs' `critical_difference_diagram` draws all-pairs
cliques, not the interval of width CD around the control that a Bonferroni-Dunn test defines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import numpy as np
import scikit_posthocs
from scipy import stats
from statsmodels.stats.multitest import multipletests

from xlgap.report.export import method_label
from xlgap.results import Run
from xlgap.utils.errors import UserError
from xlgap.utils.markdown import markdown_table

TARGET_AVG, GAP = "target avg", "gap"


class CompareError(UserError, ValueError):
    """Runs that cannot be compared: no finished seeds, no shared seeds, an unknown control or label."""


@dataclass
class RunScores:
    """One run's scores on one split and metric, by seed and language."""

    name: str
    label: str
    setting: str
    sources: list[str]
    targets: list[str]
    seeds: dict[int, dict[str, float]]

    def values(self, language: str, seeds: list[int] | None = None) -> list[float]:
        """The scores of `language` (or TARGET_AVG, GAP) over `seeds` (default all), in seed order."""
        return [self.score(seed, language) for seed in (seeds if seeds is not None else sorted(self.seeds))]

    def score(self, seed: int, language: str) -> float:
        """One seed's score of a language, the target average or the gap."""
        scores = self.seeds[seed]
        if language in (TARGET_AVG, GAP):
            targets = [scores[t] for t in self.targets if t in scores]
            average = fmean(targets) if targets else math.nan
            if language == TARGET_AVG:
                return average
            return fmean(scores[s] for s in self.sources) - average
        return scores[language]

    def mean(self, language: str) -> float:
        """The mean over seeds."""
        return fmean(self.values(language))

    def has_gap(self) -> bool:
        """Whether every seed scored every source language: the gap needs them (PAWS-X in the XTREME
        layout, for one, has no English test set)."""
        return all(s in scores for scores in self.seeds.values() for s in self.sources)

    def summary_keys(self) -> list[str]:
        """TARGET_AVG, and GAP where the run has one."""
        return [TARGET_AVG, GAP] if self.has_gap() else [TARGET_AVG]


def run_label(run: Run) -> str:
    """A run's method label: its methods `+`-joined (DF without), with the combiner of a multi-source run."""
    multi = (run.config.get("train") or {}).get("multi_source") or {}
    return method_label(run.config.get("methods") or [], multi.get("combiner"))


def run_scores(run: Run, split: str = "test", metric: str | None = None, label: str | None = None) -> RunScores:
    """The scores of a run's finished seeds; errors name the run and what is missing."""
    if not run.results:
        raise CompareError(f"{run.path}: no finished seed (no seed-*/results.json)")
    seeds: dict[int, dict[str, float]] = {}
    first = run.results[0]
    for result in run.results:
        block = result.get(split)
        if not block:
            raise CompareError(f"{run.path}/seed-{result['seed']}/results.json has no {split} scores")
        name = metric or block["metric"]
        if name not in block["metrics"]:
            raise CompareError(f"{run.path}/seed-{result['seed']}: no metric {name!r} (it has {', '.join(block['metrics'])})")
        seeds[int(result["seed"])] = dict(block["metrics"][name]["scores"])
    setting = f"{first['task']} from {','.join(first['sources'])}"
    return RunScores(run.name, label or run_label(run), setting, list(first["sources"]), list(first["targets"]), seeds)


@dataclass
class PairedTest:
    """A paired t-test of one language between a run and the control, over their shared seeds."""

    language: str
    seeds: int
    difference: float
    t: float
    p: float
    p_holm: float | None = None
    sd: float = math.nan  # sample standard deviation of the per-seed differences

    def half_width(self, level: float = 0.95) -> float:
        """Half the width of the paired t confidence interval of the mean difference."""
        return ci_half_width(self.sd, self.seeds, level)


def ci_half_width(sd: float, seeds: int, level: float = 0.95) -> float:
    """Half the width of the t confidence interval of a mean over `seeds` paired differences of sample
    standard deviation `sd`: t_{(1 + level) / 2, seeds - 1} sd / sqrt(seeds)."""
    return float(stats.t.ppf((1 + level) / 2, seeds - 1)) * sd / math.sqrt(seeds)


def seeds_to_resolve(sd: float, delta: float, level: float = 0.95, most: int = 1000) -> int | None:
    """The fewest paired seeds whose confidence interval of the mean difference is at most +-`delta` wide
    at the spread `sd` (None beyond `most`): how many seeds it takes to tell a `delta` difference from none."""
    return next((n for n in range(2, most + 1) if ci_half_width(sd, n, level) <= delta), None)


def paired_tests(run: RunScores, control: RunScores) -> list[PairedTest]:
    """Per language (both runs' languages in the run's order), then TARGET_AVG and GAP (where both runs
    have one): the mean difference run - control and its paired t-test; Holm's correction over the
    languages."""
    shared = sorted(set(run.seeds) & set(control.seeds))
    if len(shared) < 2:
        raise CompareError(
            f"{run.name} and {control.name} share {len(shared)} seed(s) ({shared}); a paired test needs at least 2"
        )
    languages = [lang for lang in run.seeds[shared[0]] if all(lang in run.seeds[s] and lang in control.seeds[s] for s in shared)]
    tests = []
    summaries = [key for key in run.summary_keys() if key in control.summary_keys()]
    for language in [*languages, *summaries]:
        a, b = np.array(run.values(language, shared)), np.array(control.values(language, shared))
        diff = a - b
        if np.allclose(diff, diff[0]):
            t, p = (math.inf if diff[0] else math.nan), (0.0 if diff[0] else 1.0)  # no spread: ttest_rel is undefined
        else:
            result = stats.ttest_rel(a, b)
            t, p = float(result.statistic), float(result.pvalue)
        tests.append(PairedTest(language, len(shared), float(diff.mean()), t, p, sd=float(diff.std(ddof=1))))
    per_language = tests[: len(languages)]
    if per_language:
        adjusted = multipletests([t.p for t in per_language], method="holm")[1]
        for test, p in zip(per_language, adjusted, strict=True):
            test.p_holm = float(p)
    return tests


def bootstrap_interval(values: list[float], level: float = 0.95, seed: int = 0) -> tuple[float, float] | None:
    """The percentile bootstrap interval of the mean over seeds, or None with fewer than 2 values."""
    if len(values) < 2:
        return None
    if np.allclose(values, values[0]):
        return float(values[0]), float(values[0])
    result = stats.bootstrap(
        (np.array(values),), np.mean, confidence_level=level, n_resamples=10_000, method="percentile", random_state=seed
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass
class Friedman:
    """The Friedman test over blocks and the Bonferroni-Dunn post-hoc against the control."""

    methods: list[str]
    blocks: list[str]
    mean_ranks: dict[str, float]
    statistic: float
    p: float
    control: str
    critical_difference: float
    p_vs_control: dict[str, float]
    """Bonferroni-corrected p-values of each other method against the control."""
    alpha: float
    dropped: list[str] = field(default_factory=list)
    """Blocks left out because some method has no score there."""


def friedman_test(table: dict[str, dict[str, float]], control: str, alpha: float = 0.05) -> Friedman:
    """`table[method][block]` = a score (higher is better). Needs at least 3 methods and 2 complete blocks."""
    methods = list(table)
    if control not in table:
        raise CompareError(f"the control {control!r} is not among the methods {methods}")
    if len(methods) < 3:
        raise CompareError(f"the Friedman test needs at least 3 methods, got {len(methods)}: {methods}")
    every = sorted({b for scores in table.values() for b in scores})
    blocks = [b for b in every if all(b in table[m] for m in methods)]
    dropped = [b for b in every if b not in blocks]
    if len(blocks) < 2:
        raise CompareError(f"the Friedman test needs at least 2 blocks scored by every method, got {blocks}")
    values = np.array([[table[m][b] for m in methods] for b in blocks])
    statistic, p = stats.friedmanchisquare(*values.T)
    ranks = stats.rankdata(-values, axis=1).mean(axis=0)  # rank 1 = best
    k, n = len(methods), len(blocks)
    pairwise = scikit_posthocs.posthoc_siegel_friedman(values)
    c = methods.index(control)
    others = [i for i in range(k) if i != c]
    corrected = multipletests([float(pairwise.iloc[c, i]) for i in others], method="bonferroni")[1]
    cd = float(stats.norm.ppf(1 - alpha / (2 * (k - 1)))) * math.sqrt(k * (k + 1) / (6 * n))
    return Friedman(
        methods,
        blocks,
        {m: float(r) for m, r in zip(methods, ranks, strict=True)},
        float(statistic),
        float(p),
        control,
        cd,
        {methods[i]: float(q) for i, q in zip(others, corrected, strict=True)},
        alpha,
        dropped,
    )


def relative_score(multi: RunScores, single: list[RunScores]) -> dict[str, Any] | None:
    """R_T of a multi-source run: mean_t S_t^multi / S_t^single over its sources, with the single-source
    run of each source (None when a source has none)."""
    by_source = {s.sources[0]: s for s in single if len(s.sources) == 1}
    if len(multi.sources) < 2 or not all(t in by_source for t in multi.sources):
        return None
    ratios = {t: multi.mean(t) / by_source[t].mean(t) for t in multi.sources}
    return {"r_t": fmean(ratios.values()), "ratios": ratios, "single": {t: by_source[t].name for t in multi.sources}}


@dataclass
class ComparisonReport:
    """Everything `xlgap compare` prints and writes."""

    split: str
    control: str
    runs: list[RunScores]
    tests: dict[str, list[PairedTest]]
    intervals: dict[str, dict[str, tuple[float, float] | None]]
    friedman: Friedman | None
    friedman_note: str
    relative: dict[str, dict[str, Any]]
    alpha: float


def compare_runs(
    runs: list[RunScores], control: str | None = None, alpha: float = 0.05, single: list[RunScores] | None = None, split: str = "test"
) -> ComparisonReport:
    """Compare every run with the control run of its setting (`control` is a label or a run name; default
    the first run's label), and run the Friedman test over every (setting, target language) block."""
    if not runs:
        raise CompareError("no runs to compare")
    control = control or runs[0].label
    labels = {(r.setting, r.label) for r in runs}
    if len(labels) < len(runs):
        seen: dict[tuple[str, str], str] = {}
        for r in runs:
            key = (r.setting, r.label)
            if key in seen:
                raise CompareError(
                    f"{seen[key]} and {r.name} are both '{r.label}' on {r.setting}; tell them apart with --label RUN=NAME"
                )
            seen[key] = r.name
    controls = {r.setting: r for r in runs if control in (r.label, r.name)}
    if not controls:
        raise CompareError(f"--control {control!r} is neither a run name nor a method label of {sorted({r.label for r in runs})}")
    control_label = next(iter(controls.values())).label
    tests = {}
    for r in runs:
        base = controls.get(r.setting)
        if base is not None and base is not r:
            tests[r.name] = paired_tests(r, base)
    intervals = {r.name: {key: bootstrap_interval(r.values(key)) for key in r.summary_keys()} for r in runs}
    table: dict[str, dict[str, float]] = {}
    for r in runs:
        for t in r.targets:
            if all(t in s for s in r.seeds.values()):
                table.setdefault(r.label, {})[f"{r.setting}: {t}"] = r.mean(t)
    try:
        friedman, note = friedman_test(table, control_label, alpha), ""
    except CompareError as err:
        friedman, note = None, str(err)
    relative = {r.name: rel for r in runs if (rel := relative_score(r, single or [])) is not None}
    return ComparisonReport(split, control_label, runs, tests, intervals, friedman, note, relative, alpha)


def _p(p: float | None) -> str:
    return "" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def mean_std(values: list[float]) -> str:
    """'mean ± sample std' of a list over seeds (the mean alone for one value)."""
    return f"{fmean(values):.1f} ± {np.std(values, ddof=1):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def report_markdown(report: ComparisonReport) -> str:
    """The comparison as Markdown: scores, paired tests, intervals, Friedman / Bonferroni-Dunn, R_T."""
    lines = [f"# Comparison ({report.split}), control: {report.control}", ""]
    for setting in dict.fromkeys(r.setting for r in report.runs):
        runs = [r for r in report.runs if r.setting == setting]
        languages = list(dict.fromkeys(lang for r in runs for lang in next(iter(r.seeds.values()))))
        header = ["run", "method", "seeds", *languages, TARGET_AVG, GAP]
        rows = []
        for r in runs:
            cells = [mean_std(r.values(lang)) if all(lang in s for s in r.seeds.values()) else "" for lang in languages]
            gap = mean_std(r.values(GAP)) if r.has_gap() else ""
            rows.append([r.name, r.label, str(len(r.seeds)), *cells, mean_std(r.values(TARGET_AVG)), gap])
        lines += [f"## {setting}", "", "mean ± sample std over seeds", "", markdown_table(header, rows), ""]
        ci_rows = []
        for r in runs:
            cells = []
            for key in (TARGET_AVG, GAP):
                ci = report.intervals[r.name].get(key)
                cells.append("" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]")
            ci_rows.append([r.name, *cells])
        lines += ["95% seed-bootstrap intervals of the mean", "", markdown_table(["run", TARGET_AVG, GAP], ci_rows), ""]
        for r in runs:
            if r.name not in report.tests:
                continue
            tests = report.tests[r.name]
            rows = [
                [t.language, f"{t.difference:+.2f}", f"{t.t:.2f}", _p(t.p), _p(t.p_holm), "*" if (t.p_holm if t.p_holm is not None else t.p) < report.alpha else ""]
                for t in tests
            ]
            lines += [
                f"### {r.label} vs {report.control}: paired t-tests over {tests[0].seeds} shared seeds",
                "",
                markdown_table(["language", "difference", "t", "p", "p (Holm)", f"p < {report.alpha}"], rows),
                "",
            ]
    f = report.friedman
    if f is None:
        lines += ["## Friedman test", "", f"not run: {report.friedman_note}", ""]
    else:
        rows = [[m, f"{f.mean_ranks[m]:.2f}", "control" if m == f.control else _p(f.p_vs_control[m])] for m in f.methods]
        lines += [
            f"## Friedman test over {len(f.blocks)} blocks (setting, target language)",
            "",
            f"chi2 = {f.statistic:.2f}, p = {_p(f.p)}; Bonferroni-Dunn critical difference at alpha = {f.alpha}: {f.critical_difference:.2f}",
            "",
            markdown_table(["method", "mean rank", "p vs control (Bonferroni)"], rows),
            "",
        ]
        if f.dropped:
            lines += [f"blocks left out (a method has no score there): {', '.join(f.dropped)}", ""]
    if report.relative:
        rows = [[name, f"{rel['r_t']:.3f}", ", ".join(f"{t}: {v:.3f} (vs {rel['single'][t]})" for t, v in rel["ratios"].items())] for name, rel in report.relative.items()]
        lines += ["## Relative fine-tuning score R_T", "", markdown_table(["run", "R_T", "S_t multi / S_t single"], rows), ""]
    return "\n".join(lines)


def report_latex(report: ComparisonReport) -> str:
    """The score tables as LaTeX (booktabs), a dagger on runs whose target average differs from the
    control's (paired t-test, p < alpha)."""
    out = []
    for setting in dict.fromkeys(r.setting for r in report.runs):
        runs = [r for r in report.runs if r.setting == setting]
        languages = list(dict.fromkeys(lang for r in runs for lang in next(iter(r.seeds.values()))))
        out += [f"% {setting}, {report.split}", "\\begin{tabular}{l" + "r" * (len(languages) + 2) + "}", "\\toprule"]
        out.append(" & ".join(["method", *languages, "target avg", "gap"]) + " \\\\")
        out.append("\\midrule")
        for r in runs:
            mark = ""
            test = next((t for t in report.tests.get(r.name, []) if t.language == TARGET_AVG), None)
            if test is not None and test.p < report.alpha:
                mark = "$^\\dagger$"
            cells = [
                (f"{fmean(r.values(lang)):.1f}" if all(lang in s for s in r.seeds.values()) else "") for lang in languages
            ]
            out.append(" & ".join([r.label.replace("_", "\\_") + mark, *cells, f"{r.mean(TARGET_AVG):.1f}", f"{r.mean(GAP):.1f}" if r.has_gap() else "--"]) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)


def plot_critical_difference(friedman: Friedman, path: Path) -> Path:
    """The critical-difference diagram: methods on the axis of mean ranks (1 = best), the interval of
    width CD on each side of the control; a method outside it differs from the control."""
    import matplotlib.pyplot as plt

    from xlgap.report.plots import save_figure

    k = len(friedman.methods)
    control = friedman.mean_ranks[friedman.control]
    cd = friedman.critical_difference
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * k))
    ax.set_xlim(max(k, control + cd) + 0.3, min(1, control - cd) - 0.3)  # best rank on the right, as Demšar draws it
    ax.set_ylim(-k - 1, 1.5)
    ax.set_yticks([])
    ax.set_xticks(range(1, k + 1))
    ax.spines["bottom"].set_position(("data", 0))
    for spine in ("left", "right", "top"):
        ax.spines[spine].set_visible(False)
    ax.plot([control - cd, control + cd], [0.8, 0.8], color="tab:red", lw=3, marker="|", markersize=10)
    ax.text(control, 1.05, f"CD = {cd:.2f} on each side of {friedman.control}", ha="center", fontsize=8)
    for i, method in enumerate(sorted(friedman.methods, key=friedman.mean_ranks.get)):
        rank = friedman.mean_ranks[method]
        y = -1 - i
        significant = method != friedman.control and friedman.p_vs_control[method] < friedman.alpha
        ax.plot([rank, rank], [0, y], color="tab:red" if significant else "gray", lw=1)
        ax.text(rank, y, f" {method} ({rank:.2f})", va="center", ha="right" if rank > (k + 1) / 2 else "left", fontsize=8,
                weight="bold" if method == friedman.control else "normal")
    ax.set_title(f"Bonferroni-Dunn vs {friedman.control}, alpha = {friedman.alpha}; Friedman p = {_p(friedman.p)}", fontsize=9)
    return save_figure(fig, path)
