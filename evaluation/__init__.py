"""Base-vs-tuned evaluation: WER, speaker similarity, latency (`python -m evaluation`, next milestones)."""
