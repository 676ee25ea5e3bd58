"""A small transformer classifier written as Hugging Face models are: ``forward(input_ids,
attention_mask)`` returns a dict with "logits" (and the hidden states), so X is a dict and the
model is called ``model(**X)``. Plain torch, nothing is downloaded.

The data are generated "reviews" (NumPy, fixed seed): 8 to 24 tokens from a 64-word vocabulary,
padded to 24; words 1-8 are positive, 9-16 negative, word 17 ("not") flips the polarity of the word
after it; the label is whether the review's polarity sums above zero. Order matters (a bag of words
cannot see which word "not" applies to), which is what attention is for.

    optarena compare examples/hf_style_transformer.py --budget 8 --seeds 3
"""

import numpy as np
import torch
from torch import nn

VOCABULARY = 64
LENGTH = 24
NOT = 17
batch_size = 32
steps = 300


class TinyTransformerClassifier(nn.Module):
    def __init__(self, width: int = 32, heads: int = 2, layers: int = 2, classes: int = 2, dropout: float = 0.1):
        super().__init__()
        self.embeddings = nn.Embedding(VOCABULARY, width, padding_idx=0)
        self.positions = nn.Embedding(LENGTH, width)
        layer = nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.classifier = nn.Linear(width, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        hidden = self.encoder(self.embeddings(input_ids) + self.positions(positions),
                              src_key_padding_mask=attention_mask == 0)
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1)  # mean over the real tokens
        return {"logits": self.classifier(pooled), "last_hidden_state": hidden}


def reviews(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, LENGTH), dtype=np.int64)
    mask = np.zeros((n, LENGTH), dtype=np.int64)
    labels = np.zeros(n, dtype=np.int64)
    polarity = np.zeros(VOCABULARY)
    polarity[1:9], polarity[9:17] = 1.0, -1.0
    for i in range(n):
        length = rng.integers(8, LENGTH + 1)
        words = rng.integers(1, VOCABULARY, length)
        words[rng.random(length) < 0.1] = NOT
        score = 0.0
        for t, w in enumerate(words):
            flip = t > 0 and words[t - 1] == NOT
            score += -polarity[w] if flip else polarity[w]
        ids[i, :length], mask[i, :length] = words, 1
        labels[i] = int(score > 0)
    return ids, mask, labels


def data():
    ids, mask, labels = reviews(2500, seed=0)
    x = {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}
    y = torch.tensor(labels)

    def rows(r):
        return {k: v[r] for k, v in x.items()}, y[r]

    return rows(slice(0, 2000)), rows(slice(2000, None))


def model() -> nn.Module:
    return TinyTransformerClassifier()

# No loss(): the default cross-entropy reads output["logits"], and the report adds held-out accuracy.
