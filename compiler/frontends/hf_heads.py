"""The modules hewn compiles for a Hugging Face folder's task (hf_folder): each takes plain tensors
and returns one named tensor, so the ONNX model has the inputs and output a user of that task
expects."""
from __future__ import annotations

import inspect

import torch


class _Head(torch.nn.Module):
    output_names: tuple = ()   # the ONNX output names (torch_names.output_names reads them)

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        params = inspect.signature(model.forward).parameters
        # a decoder used as an encoder or classifier: no KV cache in its outputs
        self.constants = {"use_cache": False} if "use_cache" in params else {}


class SentenceEmbedding(_Head):
    """feature-extraction: the mean of last_hidden_state over the tokens attention_mask keeps (the
    sentence-transformers recipe), [batch, hidden]."""

    output_names = ("sentence_embedding",)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **self.constants).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class TextLogits(_Head):
    """text-classification: the sequence classifier's logits, [batch, labels]."""

    output_names = ("logits",)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **self.constants).logits


class ImageLogits(_Head):
    """image-classification: the image classifier's logits, [batch, labels]."""

    output_names = ("logits",)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values, **self.constants).logits
