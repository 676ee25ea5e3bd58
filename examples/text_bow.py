"""Bag-of-words text classification on a generated corpus: 4 topics, a 2,000-word vocabulary,
documents of 20 to 80 words drawn from topic-specific word distributions (NumPy, fixed seed).
The model is a linear classifier on word frequencies (multinomial logistic regression), the
sparse, convex setting FTRL was made for.

    optarena compare examples/text_bow.py --budget 8 --seeds 3
"""

import numpy as np
import torch
from torch import nn

VOCABULARY = 2000
TOPICS = 4
DOCUMENTS = 3000
batch_size = 64
steps = 300


def corpus(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Word counts (DOCUMENTS, VOCABULARY) and topic labels: a shared Zipf background, and for each
    topic 50 words of its own that are 10 times likelier than in the background."""
    rng = np.random.default_rng(seed)
    background = 1.0 / np.arange(1, VOCABULARY + 1) ** 1.1
    rng.shuffle(background)
    topic_words = [rng.choice(VOCABULARY, 50, replace=False) for _ in range(TOPICS)]
    labels = rng.integers(0, TOPICS, DOCUMENTS)
    counts = np.zeros((DOCUMENTS, VOCABULARY), dtype=np.float32)
    for d, topic in enumerate(labels):
        p = background.copy()
        p[topic_words[topic]] *= 10.0
        words = rng.choice(VOCABULARY, rng.integers(20, 81), p=p / p.sum())
        np.add.at(counts[d], words, 1.0)
    return counts, labels


def data():
    counts, labels = corpus()
    x = torch.tensor(counts / counts.sum(1, keepdims=True))  # word frequencies per document
    y = torch.tensor(labels, dtype=torch.long)
    return (x[:2400], y[:2400]), (x[2400:], y[2400:])


def model() -> nn.Module:
    return nn.Linear(VOCABULARY, TOPICS)

# No loss(): integer targets get cross-entropy, and the report adds held-out accuracy.
