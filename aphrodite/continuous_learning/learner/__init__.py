"""The learner: turns trusted signals into LoRA weight versions, evaluated before they are promoted."""
