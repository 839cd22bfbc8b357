"""The `xlgap` command: run experiments, report on runs, score prediction files, inspect models, and a
ten-minute demo. A user's mistake ends in one `error:` line naming the file, line or key and what was
expected, with exit code 2."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cross-lingual fine-tuning with every language measured separately, and the gap made visible.",
)
console = Console(markup=False)  # printed text quotes paths and user input; markup is asked for where used


def _quiet_libraries() -> None:
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


USER_ERROR = 2


def _fail(message: str) -> None:
    # the message may quote user input (paths, predictions), which must not be read as Rich markup
    console.print("[bold red]error:[/] " + escape(message), soft_wrap=True, markup=True, highlight=False)
    raise typer.Exit(code=USER_ERROR)


@app.command()
def run(
    config: Path = typer.Argument(..., help="Experiment YAML (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.learning_rate=3e-5 seeds=[1,2]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in the same folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing run folder of that name first."),
) -> None:
    """Fine-tune on the source languages and evaluate every language, for every seed of CONFIG.

    The options of each method and combiner: `xlgap methods [NAME]`."""
    from xlgap.config import load_config
    from xlgap.results import load_run
    from xlgap.train.progress import RunProgress
    from xlgap.train.run import run_experiment
    from xlgap.train.trainer import NonFiniteLossError
    from xlgap.utils.errors import UserError
    from xlgap.utils.processes import end_process_group, is_main_process

    _quiet_libraries()
    try:
        cfg = load_config(config, overrides or [])
    except UserError as err:
        _fail(str(err))
    main = is_main_process()  # under torchrun / accelerate launch, one process reports
    if main:
        console.print(f"run [bold]{escape(cfg.name)}[/] -> {escape(str(cfg.run_dir))}  (model {escape(cfg.model.name)}, task {cfg.data.task})", markup=True)
    try:
        if main:
            with RunProgress(console) as progress:
                run_experiment(cfg, resume=resume, overwrite=overwrite, progress=progress)
        else:
            run_experiment(cfg, resume=resume, overwrite=overwrite)
    except NonFiniteLossError as err:
        _fail(f"{err}\nresume from the last checkpoint with: xlgap run {config} --resume")
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        command = " ".join(["xlgap run", str(config), *(overrides or []), "--resume"])
        console.print(f"\ninterrupted; continue with: {command}")
        raise typer.Exit(code=130) from None
    end_process_group()
    if main:
        _print_tables([load_run(cfg.run_dir)])
        console.print(f"results: {cfg.run_dir}/summary.md")


def _print_tables(runs: list, splits: tuple[str, ...] = ("test", "dev")) -> None:
    from xlgap.report.tables import TableError, comparison, print_table

    for split in splits:
        try:
            print_table(console, comparison(runs, split))
        except TableError:
            continue


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders (runs/<name>) to compare."),
    out: Path = typer.Option(Path("reports"), "--out", help="Folder for the figures and tables."),
    split: str = typer.Option("test", "--split", help="test or dev."),
    metric: str = typer.Option(None, "--metric", help="Metric of the table (default: the task's selection metric)."),
) -> None:
    """Compare runs: a per-language table (methods as rows) and gap / loss / multiplier figures."""
    from xlgap.report.plots import write_figures
    from xlgap.report.tables import FORMATS, comparison, print_table
    from xlgap.results import load_run
    from xlgap.utils.errors import UserError
    from xlgap.utils.files import write_text_atomic

    try:
        loaded = [load_run(path) for path in runs]
        table = comparison(loaded, split, metric)
    except UserError as err:
        _fail(str(err))
    print_table(console, table)
    for extension, render in FORMATS.items():
        write_text_atomic(out / f"{split}-{table.metric}.{extension}", render(table))
    for path in write_figures(loaded, out):
        console.print(f"figure: {path}")
    console.print(f"tables: {out}/{split}-{table.metric}.md, .csv, .tex")


@app.command()
def compare(
    runs: list[Path] = typer.Argument(..., help="Run folders to compare (any runs: single- or multi-source, one or several tasks)."),
    control: str = typer.Option(None, "--control", help="The control: a method label or run name (default: the first run's label)."),
    split: str = typer.Option("test", "--split", help="test or dev."),
    metric: str = typer.Option(None, "--metric", help="Metric (default: each task's selection metric)."),
    alpha: float = typer.Option(0.05, "--alpha", help="Significance level."),
    slf: list[Path] = typer.Option(None, "--slf", help="Single-source runs, one per source language, for R_T of the multi-source runs."),
    label: list[str] = typer.Option(None, "--label", help="RUN=NAME: the method name of a run (default: its methods and combiner)."),
    out: Path = typer.Option(Path("reports/compare"), "--out", help="Folder for compare.md, compare.tex and cd.png."),
) -> None:
    """Paired t-tests per language across seeds (Holm-corrected), seed-bootstrap intervals of the target
    average and the gap, the Friedman test with the Bonferroni-Dunn post-hoc and its critical-difference
    diagram over (setting, target language) blocks, and R_T of multi-source runs against SLF runs."""
    from xlgap.report.compare import (
        CompareError,
        compare_runs,
        plot_critical_difference,
        report_latex,
        report_markdown,
        run_scores,
    )
    from xlgap.results import load_run
    from xlgap.utils.errors import UserError
    from xlgap.utils.files import write_text_atomic

    if not 0 < alpha < 1:
        _fail(f"--alpha {alpha}: expected a level between 0 and 1")
    try:
        names: dict[str, str] = {}
        for item in label or []:
            run_name, sep, name = item.partition("=")
            if not sep or not run_name or not name:
                raise CompareError(f"--label {item!r}: expected RUN=NAME")
            names[run_name.rstrip("/")] = name
        loaded = [load_run(path) for path in runs]
        unknown = sorted(set(names) - {str(path).rstrip("/") for path in runs} - {run.name for run in loaded})
        if unknown:
            raise CompareError(f"--label names runs that are not compared: {', '.join(unknown)}")
        scores = [
            run_scores(run, split, metric, names.get(str(path).rstrip("/")) or names.get(run.name))
            for path, run in zip(runs, loaded, strict=True)
        ]
        singles = [run_scores(load_run(path), split, metric) for path in slf or []]
        result = compare_runs(scores, control, alpha, singles, split)
    except UserError as err:
        _fail(str(err))
    text = report_markdown(result)
    console.print(text, markup=False, highlight=False)
    write_text_atomic(out / "compare.md", text)
    write_text_atomic(out / "compare.tex", report_latex(result))
    written = [out / "compare.md", out / "compare.tex"]
    if result.friedman is not None:
        written.append(plot_critical_difference(result.friedman, out / "cd.png"))
    console.print("written: " + ", ".join(map(str, written)))


@app.command()
def export(
    runs: list[Path] = typer.Argument(..., help="Run folders (runs/<name>) to export."),
    output: Path = typer.Option(..., "-o", "--output", help="FILE.csv or FILE.parquet."),
) -> None:
    """Write every probe and final score of the runs as long-format rows (run, method, seed, language,
    split, step, metric, value, examples, selection, precision, commit)."""
    from xlgap.report.export import export as write_rows
    from xlgap.results import load_run
    from xlgap.utils.errors import UserError

    try:
        count = write_rows([load_run(path) for path in runs], output)
    except UserError as err:
        _fail(str(err))
    console.print(f"{count} rows: {output}")


@app.command()
def score(
    task: str = typer.Argument(..., help="Task: udpos, panx, xnli, pawsx, xquad, mlqa or tydiqa."),
    gold: Path = typer.Argument(..., help="Gold file in the task's own format (or XTREME's label-only layout)."),
    predictions: Path = typer.Argument(..., help="Predictions in XTREME's submission layout."),
    lang: str = typer.Option(None, "--lang", help="Language of the answers (needed for mlqa)."),
    all_metrics: bool = typer.Option(False, "--all-metrics", help="Add xlgap's other metrics (POS accuracy)."),
) -> None:
    """Score a predictions file against a gold file as XTREME's official scripts do; prints JSON."""
    import json

    from xlgap.data.tasks import get_task
    from xlgap.kinds import kind_of
    from xlgap.kinds.scoring import ScoreError
    from xlgap.utils.errors import UserError

    logging.basicConfig(level=logging.WARNING, format="note: %(message)s")
    try:
        spec = get_task(task)
        for path in (gold, predictions):
            if not path.exists() or path.is_dir():  # not is_file(): /dev/fd/N of `<(...)` is a pipe
                raise ScoreError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'no such file'}")
        scores = kind_of(spec).score_files(spec, gold, predictions, lang, all_metrics=all_metrics)
    except UserError as err:
        _fail(str(err))
    print(json.dumps(scores))


def _sweep_outputs(folder: Path, split: str, reference: Path | None) -> None:
    """Write and show the sweep table, and the layer figure for a layer sweep."""
    import yaml

    from xlgap.report.plots import plot_layer_sweep
    from xlgap.results import load_run
    from xlgap.sweep import SWEEP_FILE, SweepError, layer_families, sweep_rows, table_csv, table_markdown
    from xlgap.utils.files import write_text_atomic

    keys = list(yaml.safe_load((folder / SWEEP_FILE).read_text(encoding="utf-8"))["grid"])
    rows = sweep_rows(folder, split)
    markdown = table_markdown(rows, keys)
    write_text_atomic(folder / f"sweep-{split}.md", markdown)
    write_text_atomic(folder / f"sweep-{split}.csv", table_csv(rows, keys))
    console.print(markdown, markup=False, highlight=False)
    try:
        families = layer_families(rows, keys)
    except SweepError:
        return
    level = load_run(reference).summary()[split]["target_avg"]["mean"] if reference else None
    path = plot_layer_sweep(families, level, folder / f"layers-{split}.png", f"{split} target average ({rows[0]['metric']})")
    console.print(f"figure: {path}")


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="A config (with --grid) or a sweep file (config:, grid:, seeds:)."),
    grid: list[str] = typer.Option(None, "--grid", help="KEY=V1,V2,... (YAML values); several --grid make a product."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds of every point, e.g. 1,2,3 (default: the config's)."),
    name: str = typer.Option(None, "--name", help="The sweep folder's name (default: <config name>-sweep)."),
    out: Path = typer.Option(None, "--out", help="Where the sweep folder goes (default: the config's output_dir)."),
    reference: Path = typer.Option(None, "--reference", help="A run folder (plain fine-tuning) drawn as the reference line."),
    split: str = typer.Option("test", "--split", help="The split of the sweep table: test or dev."),
    launcher: str = typer.Option("local", "--launcher", help="local (this machine), slurm (one submitit job per run) or submitit-local."),
    parallel: int = typer.Option(1, "--parallel", help="local: runs at a time."),
    partition: str = typer.Option(None, "--partition", help="slurm: the partition."),
    gpus: int = typer.Option(1, "--gpus", help="slurm: GPUs per job."),
    cpus: int = typer.Option(8, "--cpus", help="slurm: CPU cores per job."),
    time: int = typer.Option(24 * 60, "--time", help="slurm: time limit per job, in minutes."),
    array_size: int = typer.Option(64, "--array-parallelism", help="slurm: jobs of the array running at once."),
    wait: bool = typer.Option(False, "--wait", help="slurm: wait for the jobs, then write the table."),
) -> None:
    """Run the product of overrides x seeds as run folders under one sweep folder (finished points are
    skipped, interrupted ones resumed), then write the sweep table and, for a layer sweep, its figure.
    With --launcher slurm every unfinished point is one job (ids in <sweep>/jobs.json); rerun the same
    command to resubmit what did not finish and to rebuild the table."""
    from xlgap.launchers import LaunchOptions
    from xlgap.sweep import finished_runs, load_sweep, run_sweep
    from xlgap.train.progress import RunProgress
    from xlgap.utils.errors import UserError

    _quiet_libraries()
    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    except ValueError:
        _fail(f"--seeds {seeds!r}: expected integers separated by commas, e.g. 1,2,3")
    try:
        options = LaunchOptions(launcher, parallel, partition, gpus, cpus, time, array_size, wait)
        options.check()
        defined = load_sweep(config, grid or [], seed_list, out, name)
        console.print(f"sweep {defined.folder}: {len(defined.points())} points")
        with RunProgress(console) as progress:
            _, jobs = run_sweep(defined, progress if launcher == "local" and parallel == 1 else None, options)
        if jobs:
            console.print(f"submitted {len(jobs)} jobs ({', '.join(jobs.values())}); ids in {defined.folder}/jobs.json")
        if finished_runs(defined.folder):  # the table of whatever has finished
            _sweep_outputs(defined.folder, split, reference)
        else:
            console.print("no point has finished yet; rerun the same command later for the table")
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print(f"\ninterrupted; rerun the same command to continue ({defined.folder})")
        raise typer.Exit(code=130) from None


@app.command(name="fsf-sets")
def fsf_sets_command(
    sweep_folder: Path = typer.Argument(..., help="A layer sweep folder (reinit / freeze families over layers[i])."),
    reference: Path = typer.Option(..., "--reference", help="The plain fine-tuning run the layers are compared with."),
    split: str = typer.Option("dev", "--split", help="Which scores decide (dev: never choose settings on test)."),
    margin: float = typer.Option(0.0, "--margin", help="Points a layer must be below / above the reference."),
    out: Path = typer.Option(None, "--out", help="Write the config fragment here (default: print it)."),
) -> None:
    """Derive FSF's sets from a layer sweep (re-initialising hurts -> S1, freezing helps -> S2) as a
    config fragment."""
    import yaml

    from xlgap.results import load_run
    from xlgap.sweep import SWEEP_FILE, SweepError, fsf_sets, sweep_rows
    from xlgap.utils.errors import UserError
    from xlgap.utils.files import write_text_atomic

    record = sweep_folder / SWEEP_FILE
    try:
        if not record.is_file():
            raise SweepError(f"{sweep_folder} is not a sweep folder (no {SWEEP_FILE})")
        keys = list(yaml.safe_load(record.read_text(encoding="utf-8"))["grid"])
        summary = load_run(reference).summary()
        if split not in summary or "target_avg" not in summary[split]:
            raise SweepError(f"--reference {reference}: no {split} target average to compare the layers with")
        level = summary[split]["target_avg"]["mean"]
        sets = fsf_sets(sweep_rows(sweep_folder, split), keys, level, margin)
    except UserError as err:
        _fail(str(err))
    fragment = yaml.safe_dump({"methods": [{"name": "fsf", "policies": sets}]}, sort_keys=False)
    header = f"# FSF sets from the layer sweep {sweep_folder} ({split} target average vs {level:.2f}, margin {margin})\n"
    if out:
        write_text_atomic(out, header + fragment)
        console.print(f"written: {out}")
    console.print(header + fragment, markup=False, highlight=False)


@app.command()
def trio(
    config: Path = typer.Argument(..., help="Experiment YAML; its source and target lists are replaced by the pair."),
    source: str = typer.Option(..., "--source", help="The source language, e.g. en."),
    target: str = typer.Option(..., "--target", help="The target language (it needs training data), e.g. de."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides for all three runs, e.g. seeds=[1,2,3]."),
    bilingual: str = typer.Option("uniform", "--bilingual", help="The bilingual model: uniform (a gradient per language, their mean) or mixed (the examples mixed)."),
) -> None:
    """Train the source-only, target-only and bilingual models of Wu et al. (2022) from one config and the
    same seeds (finished runs are kept, interrupted ones resumed), each saving its model."""
    from xlgap.interpolation import run_trio
    from xlgap.train.progress import RunProgress
    from xlgap.utils.errors import UserError

    _quiet_libraries()
    try:
        with RunProgress(console) as progress:
            folder = run_trio(config, source, target, overrides or [], progress, bilingual)
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print("\ninterrupted; rerun the same command to continue")
        raise typer.Exit(code=130) from None
    console.print(f"trio: {folder}\nnext: xlgap interpolate {folder}")


@app.command()
def interpolate(
    folder: Path = typer.Argument(..., help="A trio folder (xlgap trio), or a run folder with --to pretrained."),
    to: str = typer.Option(None, "--to", help="'pretrained': interpolate a run's encoder back towards its pretrained weights."),
    alphas: str = typer.Option(None, "--alphas", help="START:STOP:STEP or a list (trio default -0.5:1.5:0.1 plus the paper's points near 0 and 1; pretrained default 0:1:0.1)."),
    plane: str = typer.Option(None, "--plane", help="The 2D grid of a1 and a2 (default -0.5:1.5:0.1); 'none' skips 2D."),
    encoder_only: bool = typer.Option(False, "--encoder-only", help="Trio: interpolate the encoder only (the bilingual model's head kept)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Evaluation batch size."),
) -> None:
    """Score interpolated models on every language: the 1D lines and 2D plane of a trio, or a fine-tuned
    run on its way back to the pretrained weights (alpha chosen on dev, that model saved). Points already
    computed are not recomputed."""
    from xlgap.analysis.interpolate import parse_grid
    from xlgap.interpolation import (
        PRETRAINED_ALPHAS,
        interpolate_to_pretrained,
        interpolate_trio,
        pretrained_markdown,
        trio_markdown,
    )
    from xlgap.train.progress import RunProgress
    from xlgap.utils.errors import UserError

    _quiet_libraries()
    try:
        if to not in (None, "pretrained"):
            _fail(f"--to {to!r}: expected 'pretrained' (or no --to for a trio folder)")
        if to == "pretrained":
            grid = parse_grid(alphas, extra=()) if alphas else list(PRETRAINED_ALPHAS)
            with RunProgress(console) as progress:
                summary = interpolate_to_pretrained(folder, grid, batch_size=batch_size, progress=progress)
            console.print(pretrained_markdown(summary))
            console.print(f"results: {folder}/interpolation-pretrained/ (summary.md, gap.png); models: seed-*/model-interpolated/")
            return
        grid = parse_grid(alphas) if alphas else None
        plane_grid = [] if plane == "none" else parse_grid(plane, extra=()) if plane else None
        with RunProgress(console) as progress:
            summary = interpolate_trio(folder, grid, plane_grid, "all - head" if encoder_only else "all", batch_size, progress)
        console.print(trio_markdown(summary))
        console.print(f"results: {folder}/interpolation/ (summary.md, lines.png, plane.png, geometry.png)")
    except UserError as err:
        _fail(str(err))
    except KeyboardInterrupt:
        console.print("\ninterrupted; rerun the same command to continue (computed points are kept)")
        raise typer.Exit(code=130) from None


@app.command()
def fisher(
    model: str = typer.Argument(..., help="Hub id, local folder or bundled:<name>."),
    lang: str = typer.Option(..., "--lang", help="The language of the text."),
    output: Path = typer.Option(..., "-o", "--output", help="The Fisher file to write (.safetensors)."),
    text: Path = typer.Option(None, "--text", help="A UTF-8 text file, one text per line."),
    from_data: str = typer.Option(None, "--from-data", help="A task whose split's text to use (labels unused)."),
    data_dir: Path = typer.Option(None, "--data-dir", help="XTREME-layout folder for --from-data (default $XLGAP_DATA)."),
    split: str = typer.Option("dev", "--split", help="The split of --from-data."),
    hub: str = typer.Option(None, "--hub", help="A hub corpus REPO[:CONFIG], e.g. wikimedia/wikipedia:20231101.de."),
    examples: int = typer.Option(500, "--examples", help="How many texts (a fixed subset)."),
    estimator: str = typer.Option("empirical", "--estimator", help="empirical (the masked tokens) or sampled (the model's own)."),
    select: str = typer.Option("all - head", "--select", help="The parameters to compute it for (a selector)."),
    head_steps: int = typer.Option(200, "--head-steps", help="Updates fitting an MLM head where the model has none."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """The diagonal Fisher of the masked-LM loss on unlabelled text of one language (for `ewc`)."""
    import os

    from xlgap.analysis.fisher import (
        FisherError,
        compute_fisher,
        texts_from_file,
        texts_from_hub,
        texts_from_task,
    )
    from xlgap.data.sampling import subsample
    from xlgap.data.tasks import get_task
    from xlgap.languages import check_language
    from xlgap.models.load import load_tokenizer, resolve_model
    from xlgap.utils.errors import UserError

    _quiet_libraries()
    try:
        check_language(lang, "--lang")
        given = [x for x in (text, from_data, hub) if x]
        if len(given) != 1:
            raise FisherError("give exactly one of --text FILE, --from-data TASK or --hub REPO[:CONFIG]")
        if text:
            texts, source = texts_from_file(text), str(text.resolve())
        elif from_data:
            folder = data_dir or (Path(os.environ["XLGAP_DATA"]) if os.environ.get("XLGAP_DATA") else None)
            texts, source = texts_from_task(get_task(from_data), lang, split, folder)
        else:
            repo, _, config = hub.partition(":")
            texts, source = texts_from_hub(repo, config or None, "text", examples)
        texts = subsample(texts, examples, seed, name=f"{lang} texts")
        path = resolve_model(model)
        result = compute_fisher(path, load_tokenizer(path), texts, lang, source, select, estimator, head_steps, seed=seed)
        result.provenance["model"] = model
        result.save(output)
    except UserError as err:
        _fail(str(err))
    console.print(f"Fisher of {lang} from {result.provenance['examples']} texts ({result.provenance['head']}): {output}")


@app.command(name="methods")
def methods_command(
    name: str = typer.Argument(None, help="One method or combiner (default: all of them)."),
    markdown: bool = typer.Option(False, "--markdown", help="Print Markdown (what docs/options.md holds)."),
) -> None:
    """The methods and gradient combiners, with every option's type, default and help text."""
    from rich.table import Table

    from xlgap.report.options import components, find_component, options_markdown
    from xlgap.utils.errors import UserError

    if markdown:
        typer.echo(options_markdown(), nl=False)
        return
    try:
        chosen = [find_component(name)] if name else components()
    except UserError as err:
        _fail(str(err))
    for component in chosen:
        table = Table(
            title=f"{component.name} ({component.config_key} {component.name})", title_justify="left"
        )
        for column in ("option", "type", "default", "what it does"):
            table.add_column(column, overflow="fold")
        for o in component.options:
            table.add_row(o.name, o.type, "required" if o.default is None else o.default, o.help)
        console.print(component.summary, highlight=False)
        console.print(table if component.options else "  (no options)")


@app.command(name="fisher-distance")
def fisher_distance(
    fishers: list[Path] = typer.Argument(..., help="Fisher files (xlgap fisher), one per language."),
    reference: str = typer.Option("en", "--reference", help="The language the others are compared with."),
    run_dir: Path = typer.Option(None, "--run", help="A run whose per-language zero-shot scores to correlate with."),
    split: str = typer.Option("test", "--split", help="The run's split."),
    out: Path = typer.Option(Path("reports"), "--out", help="Folder for frechet.md, frechet.json and frechet.png."),
) -> None:
    """Fréchet distances between normalised Fishers (Eq. 3), and their correlation with a run's scores."""
    from xlgap.analysis.fisher import Fisher, FisherError, correlations, frechet_rows
    from xlgap.report.plots import plot_frechet
    from xlgap.results import load_run
    from xlgap.utils.errors import UserError
    from xlgap.utils.files import write_json_atomic, write_text_atomic
    from xlgap.utils.markdown import markdown_table

    try:
        loaded: dict[str, Fisher] = {}
        for path in fishers:
            fisher_ = Fisher.load(path)
            lang = fisher_.provenance.get("language")
            if lang in loaded:
                raise FisherError(f"{path}: a second Fisher of {lang!r}")
            loaded[lang] = fisher_
        rows = frechet_rows(loaded, reference)
        lines = markdown_table(["language", f"Fréchet distance to {reference}"], [(lang, f"{d:.6g}") for lang, d in rows]).split("\n")
        result: dict = {"reference": reference, "distances": dict(rows)}
        if run_dir is not None:
            summary = load_run(run_dir).summary()
            if split not in summary:
                raise FisherError(f"--run {run_dir}: no {split} scores")
            scores = {lang: cell["mean"] for lang, cell in summary[split]["scores"].items()}
            result["correlation"] = corr = correlations(dict(rows), scores)
            lines += ["", f"Correlation with {run_dir.name}'s {split} {summary[split]['metric']} over {len(corr['languages'])} languages: "
                      f"Pearson {corr['pearson']:+.2f} (p = {corr['pearson_p']:.3f}), Spearman {corr['spearman']:+.2f} (p = {corr['spearman_p']:.3f})"]  # fmt: skip
            label = f"{split} {summary[split]['metric']}"
            console.print(f"figure: {plot_frechet(dict(rows), scores, out / 'frechet.png', label)}")
    except UserError as err:
        _fail(str(err))
    write_text_atomic(out / "frechet.md", "\n".join(lines) + "\n")
    write_json_atomic(out / "frechet.json", result)
    console.print("\n".join(lines), markup=False, highlight=False)


@app.command()
def anatomy(
    model: str = typer.Argument("bundled:multilingual-e5-small", help="Hub id, local folder or bundled:<name>."),
    select: str = typer.Option(None, "--select", help="Show which parameters a selector names."),
    method: list[str] = typer.Option(None, "--method", help="Apply a method first, e.g. lora, adapter, bitfit or '{name: lora, rank: 4}' (repeatable)."),
) -> None:
    """Show how a model's parameters map to layers and components (and test a selector), after the
    methods given with --method (parameter-efficient ones add modules and freeze the rest)."""
    import yaml
    from transformers import AutoModel

    from xlgap.methods import PrepareContext, build_methods
    from xlgap.models.anatomy import SelectorError, model_anatomy
    from xlgap.models.load import ModelNotFoundError, resolve_model
    from xlgap.utils.errors import UserError

    _quiet_libraries()
    try:
        encoder = AutoModel.from_pretrained(resolve_model(model))
    except (OSError, ValueError) as err:
        _fail(str(ModelNotFoundError(f"{model}: not a model folder, and not a model reachable on the hub ({str(err).splitlines()[0]})")))
    if method:
        specs = [yaml.safe_load(m) for m in method]
        specs = [{"name": s} if isinstance(s, str) else s for s in specs]
        try:
            build_methods(specs).prepare(encoder, PrepareContext())
        except UserError as err:
            _fail(str(err))
    loaded = model_anatomy(encoder)
    console.print(loaded.summary())
    if method:
        trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
        total = sum(p.numel() for p in encoder.parameters())
        console.print(f"trainable after {', '.join(method)}: {trainable:,} of {total:,} values ({100 * trainable / total:.2f}%)")
    if select:
        try:
            names = loaded.select(select)
        except SelectorError as err:
            _fail(str(err))
        console.print(f"{select}: {len(names)} parameters")
        for name in names:
            console.print(f"  {name}")


@app.command()
def demo(
    data_dir: Path = typer.Option(None, "--data-dir", help="XTREME-layout data folder (default: $XLGAP_DATA, else the hub)."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the two runs and the figures go."),
    precision: str = typer.Option("auto", "--precision", help="train.precision of both runs: auto, fp32, bf16 or fp16."),
) -> None:
    """Ten minutes on a laptop CPU: DF vs FSF on English UD POS, zero-shot on 10 languages."""
    from xlgap.demo import run_demo

    _quiet_libraries()
    from xlgap.utils.errors import UserError

    try:
        run_demo(data_dir, out, console, precision)
    except (UserError, ConnectionError) as err:
        _fail(str(err))


if __name__ == "__main__":
    app()
