"""Base vs fine-tuned model: WER, CER, speaker similarity and streaming latency (`python -m evaluation`)."""
