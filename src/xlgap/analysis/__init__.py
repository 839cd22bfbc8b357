"""Analyses of fine-tuned models: representation similarity to the pretrained model (CKA)."""
