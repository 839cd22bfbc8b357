"""`python -m xlgap ...`: the CLI, also as `torchrun -m xlgap run CONFIG` or `accelerate launch -m xlgap run CONFIG`."""

from xlgap.cli import app

app()
