"""One accuracy budget across techniques: sensitivity tables, the knapsack planner with
verification and rollback, its ONNX and torch backends, the ONNX pass (PlanStructure), the
torch-side planner step (torch_plan) and the split of the budget between structure and int8."""
