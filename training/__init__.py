"""LoRA fine-tuning of T3 on a user's recordings (recipe: `python -m training.lora`, next milestones)."""
