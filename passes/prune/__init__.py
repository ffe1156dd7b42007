"""Structured pruning: the IR-neutral channel rule table and dependency groups (channel_rules,
channel_groups), importance and the choice of widths (prune_plan), the ONNX side (onnx_channels,
PruneChannels, EliminateDeadChannels), the torch.fx side (fx_channels), and Sparsify."""
