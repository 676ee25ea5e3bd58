"""A model with two inputs, ``model(words, numbers)``: X is a tuple (words, numbers) and the model
is called ``model(*X)``; the data come as a torch Dataset whose items are ((words, numbers), y).

Generated listings (NumPy, fixed seed): 12 word ids from a 500-word vocabulary (some words raise
the price, some lower it) and 4 numeric features (size, age, rooms, distance); the target is the
standardised log price, a sum of both parts plus noise. The words go through an
``nn.Embedding(sparse=True)``, the layer AdaGrad and FTRL are made for: optarena runs it with dense
gradients (the same values on the rows a batch uses, zeros elsewhere), so it is vmapped like the rest.

    optarena compare examples/two_input_model.py --budget 8 --seeds 3
"""

import numpy as np
import torch
from torch import nn

VOCABULARY = 500
WORDS = 12
NUMBERS = 4
batch_size = 64
steps = 300


class Listings(torch.utils.data.Dataset):
    def __init__(self, words: np.ndarray, numbers: np.ndarray, target: np.ndarray) -> None:
        self.words = torch.tensor(words)
        self.numbers = torch.tensor(numbers, dtype=torch.float32)
        self.target = torch.tensor(target, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int):
        return (self.words[i], self.numbers[i]), self.target[i]


class WordsAndNumbers(nn.Module):
    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCABULARY, width, sparse=True)
        self.numbers = nn.Sequential(nn.Linear(NUMBERS, width), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, 1))

    def forward(self, words: torch.Tensor, numbers: torch.Tensor) -> torch.Tensor:
        text = self.words(words).mean(1)
        return self.head(torch.cat([text, self.numbers(numbers)], -1))


def listings(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    word_value = rng.normal(0.0, 1.0, VOCABULARY) * (rng.random(VOCABULARY) < 0.1)  # 10% of words matter
    words = rng.integers(0, VOCABULARY, (n, WORDS))
    numbers = rng.normal(0.0, 1.0, (n, NUMBERS)).astype(np.float32)
    log_price = word_value[words].sum(1) + numbers @ np.array([0.8, -0.4, 0.5, -0.6]) \
        + 0.3 * np.tanh(numbers[:, 0] * numbers[:, 3]) + 0.2 * rng.normal(size=n)
    target = (log_price - log_price.mean()) / log_price.std()
    return words, numbers, target


def data():
    words, numbers, target = listings(3000, seed=0)
    return (Listings(words[:2400], numbers[:2400], target[:2400]),
            Listings(words[2400:], numbers[2400:], target[2400:]))


def model() -> nn.Module:
    return WordsAndNumbers()

# No loss(): float targets get mean squared error (the (B, 1) output is matched to the (B,) targets).
