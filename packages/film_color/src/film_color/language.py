"""The caption side of the model: a word vocabulary and the bidirectional LSTM encoder.

Manjunatha et al., "Learning to Color from Language", NAACL 2018, §2.3: "Given an image I
paired with a unit of text T, we first encode T into a continuous representation h using the
last hidden state of a bi-directional LSTM." Here:

* :func:`tokenize` splits a caption into lower-cased word tokens (letters and digits, with an
  optional apostrophe suffix such as ``"man's"``); punctuation is dropped;
* :class:`Vocabulary` maps tokens to ids, built from the training captions with a minimum count;
  id 0 is ``<pad>`` and id 1 is ``<unk>`` (words never seen, or seen fewer than ``min_count``
  times). A caption without any word encodes as the single token ``<unk>``, so every sequence
  has length at least one;
* :class:`VocabularyConfig` holds how the vocabulary is built and captions are cut (the
  ``vocabulary`` argument of :class:`film_color.module.FilmColorModule`);
* :class:`CaptionEncoder` embeds the ids and runs one bidirectional LSTM layer over the packed
  sequence; ``h = [h_forward(T); h_backward(1)]``, the final state of each direction, shape
  ``(B, 2 * hidden_size)``. Packing makes ``h`` independent of how much padding follows a
  caption in its batch.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = [
    "PAD",
    "UNK",
    "CaptionEncoder",
    "Vocabulary",
    "VocabularyConfig",
    "tokenize",
]

PAD = "<pad>"
UNK = "<unk>"
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


def tokenize(caption: str) -> list[str]:
    """Lower-cased word tokens of ``caption``: ``"A Red-car!" -> ["a", "red", "car"]``."""
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}")
    return _TOKEN.findall(caption.lower())


class Vocabulary:
    """Word tokens and their ids; ``tokens[0] == "<pad>"``, ``tokens[1] == "<unk>"``.

    Args:
        tokens: the id-ordered token list, starting with :data:`PAD` and :data:`UNK`, without
            duplicates (as stored in checkpoints by :meth:`to_list`).

    Example:
        >>> vocab = Vocabulary.build(["a red car", "a blue car"])
        >>> vocab.tokens
        ['<pad>', '<unk>', 'a', 'car', 'blue', 'red']
        >>> vocab.encode(["a green car"])[0].tolist()
        [[2, 1, 3]]
    """

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            dupes = sorted(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"duplicate tokens in the vocabulary: {dupes[:8]}")
        if not all(isinstance(t, str) and t for t in tokens):
            raise ValueError("vocabulary tokens must be non-empty strings")
        self.tokens = tokens
        self._ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(
        cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """Vocabulary of the words of ``captions`` seen at least ``min_count`` times.

        Words are ordered by decreasing count, ties alphabetically, so the result depends only
        on the multiset of captions. ``max_size`` caps the number of words (specials excluded).
        """
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        if max_size is not None and max_size < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}")
        counts: Counter[str] = Counter()
        for caption in captions:
            counts.update(tokenize(caption))
        words = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        words = [w for w in words if w not in (PAD, UNK)]
        if max_size is not None:
            words = words[:max_size]
        return cls([PAD, UNK, *words])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.tokens == other.tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens)"

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    def index(self, word: str) -> int:
        """Id of ``word`` (already a token), :attr:`unk_id` when unknown."""
        return self._ids.get(word, 1)

    def ids(self, caption: str, max_length: int | None = None) -> list[int]:
        """Token ids of one caption (``[unk_id]`` when it has no word), cut at ``max_length``."""
        ids = [self.index(w) for w in tokenize(caption)] or [self.unk_id]
        return ids[:max_length] if max_length is not None else ids

    def encode(
        self, captions: Sequence[str], max_length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Padded id matrix and lengths of a batch of captions.

        Returns:
            ``tokens`` long ``(B, T)`` (``T`` = longest caption, padded with 0) and ``lengths``
            long ``(B,)`` with ``1 <= lengths <= T``.
        """
        if isinstance(captions, str):
            raise TypeError("encode() takes a sequence of captions, not one str")
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        if len(captions) == 0:
            raise ValueError("encode() needs at least one caption")
        rows = [self.ids(c, max_length) for c in captions]
        lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
        tokens = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
        for i, row in enumerate(rows):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return tokens, lengths

    def to_list(self) -> list[str]:
        """The id-ordered tokens (what checkpoints store)."""
        return list(self.tokens)


@dataclass(frozen=True)
class VocabularyConfig:
    """How :class:`film_color.module.FilmColorModule` builds its caption vocabulary from the
    training captions (at the start of ``fit``) and cuts captions. In a config file
    ``vocabulary: {min_count: 3}``, on the command line ``--model.vocabulary.min_count 3``.

    Args:
        min_count: words seen fewer times in the training captions map to ``<unk>`` (>= 1).
        max_vocab_size: keep at most this many words, most frequent first (``None``: all).
        vocab_scan: training items read for the vocabulary when the dataset does not hold its
            captions as records (generated scenes, shard streams) (>= 1).
        max_caption_length: captions are cut to this many tokens (>= 1).
    """

    min_count: int = 1
    max_vocab_size: int | None = None
    vocab_scan: int = 5000
    max_caption_length: int = 64

    def __post_init__(self) -> None:
        if self.min_count < 1:
            raise ValueError(f"vocabulary.min_count must be >= 1, got {self.min_count}")
        if self.max_vocab_size is not None and self.max_vocab_size < 1:
            raise ValueError(
                f"vocabulary.max_vocab_size must be >= 1 or None, got {self.max_vocab_size}"
            )
        if self.vocab_scan < 1 or self.max_caption_length < 1:
            raise ValueError(
                f"vocab_scan and max_caption_length must be >= 1, got {self.vocab_scan}, "
                f"{self.max_caption_length}"
            )

    def build(self, captions: Iterable[str]) -> Vocabulary:
        """The vocabulary of ``captions`` (:meth:`Vocabulary.build` with ``min_count`` and
        ``max_vocab_size``)."""
        return Vocabulary.build(captions, self.min_count, self.max_vocab_size)


class CaptionEncoder(nn.Module):
    """Word embedding + one bidirectional LSTM layer; ``h`` = final states of both directions.

    Args:
        vocab_size: number of token ids; ``None`` defers the embedding until
            :meth:`set_vocab_size` (the vocabulary is built from the training data, after the
            model is constructed).
        embedding_dim: word-vector size.
        hidden_size: LSTM state size per direction; ``h`` has ``2 * hidden_size`` features.

    Shapes:
        ``forward(tokens, lengths)``: ``tokens`` long ``(B, T)`` (0 = padding), ``lengths``
        long ``(B,)`` in ``[1, T]`` -> ``h`` float ``(B, output_dim)``.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        embedding_dim: int = 300,
        hidden_size: int = 256,
    ):
        super().__init__()
        if embedding_dim < 1 or hidden_size < 1:
            raise ValueError(
                f"embedding_dim and hidden_size must be >= 1, got {embedding_dim}, {hidden_size}"
            )
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.embedding: nn.Embedding | None = None
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        if vocab_size is not None:
            self.set_vocab_size(vocab_size)

    @property
    def output_dim(self) -> int:
        """Size of ``h``: ``2 * hidden_size`` (the final states of both directions)."""
        return 2 * self.hidden_size

    @property
    def vocab_size(self) -> int | None:
        return None if self.embedding is None else self.embedding.num_embeddings

    def set_vocab_size(self, vocab_size: int) -> None:
        """(Re)create the embedding table for ``vocab_size`` ids (freshly initialised)."""
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (<pad>, <unk>), got {vocab_size}")
        if self.embedding is not None and self.embedding.num_embeddings == vocab_size:
            return
        device = self.lstm.weight_ih_l0.device
        self.embedding = nn.Embedding(vocab_size, self.embedding_dim, padding_idx=0).to(device)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        if self.embedding is None:
            raise RuntimeError(
                "the caption encoder has no vocabulary yet: fit the model (the vocabulary is "
                "built from the training captions) or load a checkpoint"
            )
        if tokens.dim() != 2 or lengths.shape != tokens.shape[:1]:
            raise ValueError(
                f"expected tokens (B, T) and lengths (B,), got {tuple(tokens.shape)} and "
                f"{tuple(lengths.shape)}"
            )
        if int(lengths.min()) < 1 or int(lengths.max()) > tokens.shape[1]:
            raise ValueError(f"lengths must be in [1, {tokens.shape[1]}], got {lengths.tolist()}")
        if int(tokens.max()) >= self.embedding.num_embeddings or int(tokens.min()) < 0:
            raise ValueError(
                f"token ids must be in [0, {self.embedding.num_embeddings}), got "
                f"[{int(tokens.min())}, {int(tokens.max())}]"
            )
        embedded = self.embedding(tokens)
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, (h_n, _) = self.lstm(packed)  # h_n: (2, B, hidden), forward then backward
        return torch.cat([h_n[0], h_n[1]], dim=1)
