"""The diagonal Fisher information of the masked-LM loss on unlabelled text of one language, and the
Fréchet distance between two of them ("Frustratingly simple regularization...", Section 3.2 and Eq. 3).

The Fisher is the mean over examples of the squared per-example gradient, F_i = E_x[(d loss(x) / d
theta_i)^2], not the square of a mini-batch-mean gradient (which shrinks with the batch size: the
mistake a maintainer of a widely used continual-learning library confirmed in its own EWC). Per-example
gradients come from a batch of one: `torch.func.vmap` over `grad` cannot trace transformers' attention
masks (data-dependent control flow), and a batch of one is as fast on a CPU. The estimator is named:
`empirical` uses the masked tokens themselves as labels (the empirical Fisher, what EWC implementations
commonly compute), `sampled` draws the labels from the model's own predictive distribution (the true
Fisher of the model). 15% of the non-special tokens of every example (at least one) are replaced by the
mask token, the same positions for a seed.

A model without a masked-LM head (the bundled multilingual-e5-small, a sentence encoder) gets BERT's
MLM head, tied to its word embeddings, fitted briefly on the same text with the encoder frozen
(`head_steps` updates): the Fisher then measures how the *encoder's* weights matter to predicting
masked words of that language, which is what EWC needs, without changing the encoder. Checkpoints with a
pretrained head (`xlm-roberta-*`, `bert-base-multilingual-*`) use it as it is.

The Fréchet distance between diagonal Fishers normalised to sum to one (so that the amount of text
does not matter) is d^2 = 1/2 tr(F1 + F2 - 2 (F1 F2)^(1/2)) = 1/2 sum_i (sqrt(f1_i) - sqrt(f2_i))^2.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForMaskedLM

from xlgap.kinds.base import IGNORE_INDEX
from xlgap.methods.fisher_file import Fisher, FisherError
from xlgap.models.anatomy import model_anatomy
from xlgap.models.load import quiet_loading

log = logging.getLogger(__name__)
ESTIMATORS = ("empirical", "sampled")
MASK_SHARE = 0.15


def frechet_distance(first: Fisher, second: Fisher) -> float:
    """Squared Fréchet distance between two normalised diagonal Fishers (over their common parameters)."""
    a, b = first.normalized(), second.normalized()
    common = sorted(set(a) & set(b))
    if not common:
        raise FisherError("the two Fishers share no parameter")
    return 0.5 * sum(float(((a[k].sqrt() - b[k].sqrt()) ** 2).sum()) for k in common)


def mask_tokens(input_ids: torch.Tensor, special: torch.Tensor, mask_id: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(masked ids, labels) of one example: MASK_SHARE of the non-special tokens (at least one) masked."""
    candidates = (~special).nonzero().flatten()
    if len(candidates) == 0:
        raise FisherError("an example has no token to mask")
    count = max(1, round(MASK_SHARE * len(candidates)))
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[chosen] = input_ids[chosen]
    masked = input_ids.clone()
    masked[chosen] = mask_id
    return masked, labels


def _examples(texts: Iterable[str], tokenizer: Any, max_length: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if tokenizer.mask_token_id is None:
        raise FisherError("the tokenizer has no mask token, so there is no masked-LM loss to take the Fisher of")
    generator = torch.Generator().manual_seed(seed)
    out = []
    for text in texts:
        enc = tokenizer(text, truncation=True, max_length=max_length, return_special_tokens_mask=True, return_tensors="pt")
        ids, special = enc["input_ids"][0], enc["special_tokens_mask"][0].bool()
        if (~special).any():
            out.append(mask_tokens(ids, special, tokenizer.mask_token_id, generator))
    if not out:
        raise FisherError("no text with any token to mask")
    return out


def fit_mlm_head(model: nn.Module, examples: list[tuple[torch.Tensor, torch.Tensor]], steps: int, seed: int) -> None:
    """Fit the masked-LM head for `steps` single-example updates with everything else frozen."""
    head = set(model_anatomy(model).select("head"))
    trainable = [p for n, p in model.named_parameters() if n in head]
    frozen = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in head)
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    order = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(steps):
        ids, labels = examples[int(torch.randint(len(examples), (1,), generator=order))]
        loss = model(input_ids=ids[None], labels=labels[None]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    for n, p in model.named_parameters():
        p.requires_grad_(frozen[n])


def load_mlm_model(path: str, texts_for_head: list[tuple[torch.Tensor, torch.Tensor]], head_steps: int, seed: int) -> tuple[nn.Module, str]:
    """A masked-LM model from `path`, and how its head came about (pretrained, or fitted here)."""
    torch.manual_seed(seed)
    with quiet_loading():  # the missing masked-LM head is reported below, not as transformers' load table
        model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True, dtype=torch.float32)
    head = set(model_anatomy(model).select("head"))
    missing = [k for k in info.get("missing_keys", []) if k in head]
    if not missing:
        return model.eval(), "pretrained masked-LM head"
    log.info("%s has no masked-LM head (%d head tensors missing): fitting one for %d updates", path, len(missing), head_steps)
    fit_mlm_head(model, texts_for_head, head_steps, seed)
    return model, f"masked-LM head tied to the word embeddings, fitted for {head_steps} updates on the same text (encoder frozen)"


def diagonal_fisher(
    model: nn.Module,
    examples: list[tuple[torch.Tensor, torch.Tensor]],
    select: str = "all - head",
    estimator: str = "empirical",
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Mean over `examples` (masked ids, labels) of the squared per-example gradient of the masked-LM
    loss, for the parameters `select` names."""
    if estimator not in ESTIMATORS:
        raise FisherError(f"estimator: expected one of {', '.join(ESTIMATORS)}, got {estimator!r}")
    names = set(model_anatomy(model).select(select))
    params = {n: p for n, p in model.named_parameters() if n in names}
    fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    generator = torch.Generator().manual_seed(seed + 2)
    was = {n: p.requires_grad for n, p in model.named_parameters()}
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    model.eval()
    try:
        for ids, labels in examples:
            if estimator == "sampled":
                with torch.no_grad():
                    logits = model(input_ids=ids[None]).logits[0]
                where = labels != IGNORE_INDEX
                sampled = torch.multinomial(logits[where].softmax(-1), 1, generator=generator).squeeze(-1)
                labels = labels.clone()
                labels[where] = sampled
            loss = model(input_ids=ids[None], labels=labels[None]).loss
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, _), g in zip(params.items(), grads, strict=True):
                if g is not None:
                    fisher[name] += g.detach().float() ** 2
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(was[n])
    return {n: f / len(examples) for n, f in fisher.items()}


def compute_fisher(
    model_path: str,
    tokenizer: Any,
    texts: list[str],
    language: str,
    source: str,
    select: str = "all - head",
    estimator: str = "empirical",
    head_steps: int = 200,
    max_length: int = 128,
    seed: int = 0,
) -> Fisher:
    """The diagonal Fisher of `language` from `texts` (see the module docstring), with its provenance."""
    examples = _examples(texts, tokenizer, max_length, seed)
    model, head = load_mlm_model(model_path, examples, head_steps, seed)
    tensors = diagonal_fisher(model, examples, select, estimator, seed)
    provenance = {
        "model": model_path, "language": language, "source": source, "examples": len(examples),
        "estimator": estimator, "select": select, "mask_share": MASK_SHARE, "max_length": max_length,
        "seed": seed, "head": head, "mean": sum(float(t.sum()) for t in tensors.values()) / max(1, sum(t.numel() for t in tensors.values())),
    }  # fmt: skip
    if not math.isfinite(provenance["mean"]):
        raise FisherError(f"the Fisher of {language} is not finite")
    return Fisher(tensors, provenance)


def texts_from_file(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file, one text each."""
    path = Path(path)
    if not path.is_file():
        raise FisherError(f"--text {path}: no such file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise FisherError(f"--text {path}: not UTF-8 text ({err.reason})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise FisherError(f"--text {path}: no text in it (one text per line expected)")
    return texts


def texts_from_task(task: Any, language: str, split: str, data_dir: Path | None) -> tuple[list[str], str]:
    """The raw text of a task's split in `language` (its labels unused), and where it came from."""
    from xlgap.kinds import kind_of, load_split

    data = load_split(task, language, split, data_dir=data_dir, hub=data_dir is None)
    return [kind_of(task).text_of(ex) for ex in data.examples], str(data.origin)


def texts_from_hub(repo: str, config: str | None, column: str, count: int) -> tuple[list[str], str]:
    """The first `count` texts of a hub corpus (e.g. wikimedia/wikipedia, 20231101.de), streamed."""
    import datasets

    try:
        stream = datasets.load_dataset(repo, config, split="train", streaming=True)
        texts = [row[column] for row, _ in zip(stream, range(count), strict=False) if row[column].strip()]
    except (ConnectionError, FileNotFoundError, ValueError, KeyError) as err:
        raise FisherError(f"--hub {repo} {config or ''}: {err}") from None
    return texts, f"hub {repo} {config or ''} (first {len(texts)} texts)"


def frechet_rows(fishers: dict[str, Fisher], reference: str) -> list[tuple[str, float]]:
    """(language, squared Fréchet distance to the reference language's Fisher) for every other language."""
    if reference not in fishers:
        raise FisherError(f"no Fisher of the reference language {reference!r}; have {', '.join(sorted(fishers))}")
    return [(lang, frechet_distance(fishers[reference], f)) for lang, f in fishers.items() if lang != reference]


def correlations(distances: dict[str, float], scores: dict[str, float]) -> dict[str, Any]:
    """Pearson and Spearman correlation (with p-values) of the distances with the scores of the same languages."""
    from scipy.stats import pearsonr, spearmanr

    languages = sorted(set(distances) & set(scores))
    if len(languages) < 3:
        raise FisherError(f"a correlation needs at least 3 languages with both a Fisher and a score; have {languages}")
    x, y = [distances[lang] for lang in languages], [scores[lang] for lang in languages]
    pearson, spearman = pearsonr(x, y), spearmanr(x, y)
    return {
        "languages": languages,
        "pearson": float(pearson.statistic), "pearson_p": float(pearson.pvalue),
        "spearman": float(spearman.statistic), "spearman_p": float(spearman.pvalue),
    }  # fmt: skip
