"""xlgap: cross-lingual fine-tuning of multilingual encoders, every language measured separately."""

__version__ = "0.1.0"
