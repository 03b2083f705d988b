"""Text: the corpora and prompt files, and text turned into token tensors."""
