"""Knowledge distillation: DistillConfig (config, no torch import) and distill (train)."""
