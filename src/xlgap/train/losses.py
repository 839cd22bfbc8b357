"""Cross-entropy normalised over the whole accumulated batch, the default loss of XlgapTrainer.

transformers' Trainer assumes that a model whose `forward` takes `**kwargs` divides its loss by
`num_items_in_batch` (the labelled positions of all micro-batches of an update), and then skips its
own division by the accumulation steps. BERT/XLM-R token and sequence classification heads take
`**kwargs` but return a plain per-micro-batch mean, so with gradient accumulation the loss, the
gradient and gradient clipping are inflated by the number of steps (huggingface/transformers#47688,
open for transformers 5.x). Passing this function as `compute_loss_func` makes an update with
accumulation exactly the update of the equivalent large batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xlgap.train.evaluate import IGNORE_INDEX


def classification_loss(outputs: dict, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
    """Summed cross-entropy over labelled positions divided by the labelled positions of the update.

    Works for token classification (labels per token, -100 ignored) and sequence classification
    (one label per example); without `num_items_in_batch` it is the mean over this batch.
    """
    logits = outputs["logits"]
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORE_INDEX).sum()
    return total / count
