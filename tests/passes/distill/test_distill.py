"""distill() leaves the teacher as it found it (requires_grad flags included): the planner copies
the teacher's graph again for a second fine-tuning round, and a frozen copy could not be trained
("element 0 of tensors does not require grad" on MLP + planner + train_data)."""
from __future__ import annotations

import copy

import torch

from hewn import DistillConfig, distill


def test_teacher_flags_are_restored_and_a_copy_trains_again():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    data = [(torch.randn(8, 8),) for _ in range(4)]
    config = DistillConfig(steps=3, progress=False)
    for _ in range(2):  # the planner's rounds: a fresh copy of the teacher is the student each time
        student = copy.deepcopy(teacher)
        with torch.no_grad():
            student[0].weight.mul_(0.5)
        log = distill(student, teacher, data, config, data[0])
        assert log["steps"] == 3 and log["last_loss"] < log["first_loss"]
        assert all(p.requires_grad for p in teacher.parameters())
