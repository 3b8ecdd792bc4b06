"""BertApproxTokenizer: text to a bag of vocabulary entries.

A text is normalized and split into words exactly like the teacher's tokenizer does
(:mod:`.text_normalization`), then turned into entry ids:

1. greedy longest match over a trie of word n-gram entries ("new york city" before "new york");
2. a word that no entry covers falls back to the teacher's WordPiece pieces ("##ing"), or to the
   unknown token, so every word is represented;
3. skip-gram entries ("a <skip> b": two words with 1..``skipgram_max_gap`` words between them) are
   added on top of the longest-match entries.

The bag keeps text order (the model ignores it) and is cut at ``max_bag_size`` (512) entries. With a
``teacher_window`` (the teacher's maximum sequence length), only the words the teacher reads are used: the
student then approximates what the teacher embeds, not a text the teacher never saw whole.
Entry kinds are read from the entry strings themselves, so the vocabulary file is one entry per line.

Copied next to the model as remote code: imports only the standard library, transformers and its
dependencies, and sibling modules.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from transformers import BatchEncoding, PreTrainedTokenizer
from transformers.tokenization_utils_base import PaddingStrategy, TruncationStrategy

from .fast_bags import compiled_bag_encoder
from .special_tokens import BERT_SPECIAL_TOKENS, PLAIN, SPECIAL_START, special_token_pattern, words_with_special_marks
from .text_normalization import iter_words
from .word_cache import WordCache

VOCAB_FILES_NAMES = {"vocab_file": "vocab.txt"}
SKIP_MARKER = " <skip> "
PIECE_PREFIX = "##"
MAX_BAG_SIZE = 512


def entry_kind(entry: str, special_tokens: Iterable[str] = ()) -> str:
    """Classify an entry string: ``special``, ``piece``, ``skipgram``, ``ngram`` or ``word``."""
    if entry in special_tokens:
        return "special"
    if SKIP_MARKER in entry:
        return "skipgram"
    if " " in entry:
        return "ngram"
    if entry.startswith(PIECE_PREFIX) and len(entry) > len(PIECE_PREFIX):
        return "piece"
    return "word"


class BagEncoder:
    """The tokenization algorithm on its own: entry strings in, entry ids of a text out."""

    def __init__(
        self,
        entries: list[str],
        unk_token: str,
        special_tokens: Iterable[str] = (),
        lowercase: bool = True,
        strip_accents: bool | None = None,
        skipgram_max_gap: int = 2,
        max_chars_per_word: int = 100,
        teacher_window: int = 0,
        wordpiece_entries: int = 0,
        teacher_special_tokens: Iterable[str] | None = None,
    ) -> None:
        self.entries = entries
        self.entry_to_id = {entry: i for i, entry in enumerate(entries)}
        if len(self.entry_to_id) != len(entries):
            raise ValueError("the vocabulary has duplicate entries")
        if unk_token not in self.entry_to_id:
            raise ValueError(f"the unknown token {unk_token!r} is not in the vocabulary")
        self.unk_id = self.entry_to_id[unk_token]
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.skipgram_max_gap = skipgram_max_gap
        self.max_chars_per_word = max_chars_per_word
        special = set(special_tokens)
        self.special_tokens = frozenset(special)
        # trie[word] = (entry id of the n-gram ending here or -1, children)
        self.trie: dict[str, tuple[int, dict]] = {}
        self.pieces: dict[str, int] = {}
        self.skipgrams: dict[tuple[str, str], int] = {}
        self.max_ngram = 1
        for i, entry in enumerate(entries):
            kind = entry_kind(entry, special)
            if kind in ("word", "ngram"):
                self._add_ngram(entry.split(" "), i)
            elif kind == "piece":
                self.pieces[entry] = i
            elif kind == "skipgram":
                first, second = entry.split(SKIP_MARKER)
                self.skipgrams[(first, second)] = i
        self.skip_first = {first for first, _ in self.skipgrams}
        self._word_pieces = WordCache(self._word_pieces_uncached, max_chars_per_word)
        # The teacher reads at most teacher_window tokens ([CLS] and [SEP] included): words past them are cut.
        # Its own whole-word tokens are the wordpiece_entries entries after the special ones (all words if 0).
        if teacher_window < 0 or wordpiece_entries < 0:
            raise ValueError("teacher_window and wordpiece_entries must not be negative")
        self.teacher_window = teacher_window
        self.wordpiece_entries = wordpiece_entries
        first = next((i for i, entry in enumerate(entries) if entry not in special), len(entries))
        teacher_words = entries[first : first + wordpiece_entries] if wordpiece_entries else entries
        self.teacher_words = {e: self.entry_to_id[e] for e in teacher_words if entry_kind(e, special) == "word"}
        self._teacher_token_count = WordCache(self._teacher_token_count_uncached, max_chars_per_word)
        # The teacher reads its special tokens written in a text ("[CLS]") as one token each.
        specials = BERT_SPECIAL_TOKENS if teacher_special_tokens is None else teacher_special_tokens
        self.teacher_special_tokens = tuple(sorted({token for token in specials if token}, key=len, reverse=True))
        self._special_pattern = special_token_pattern(self.teacher_special_tokens)

    def _add_ngram(self, words: list[str], entry_id: int) -> None:
        self.max_ngram = max(self.max_ngram, len(words))
        level = self.trie
        for depth, word in enumerate(words):
            node_id, children = level.get(word, (-1, {}))
            if depth == len(words) - 1:
                node_id = entry_id
            level[word] = (node_id, children)
            level = children

    def _greedy_pieces(self, word: str, first_piece) -> tuple[int, ...]:
        """WordPiece of one word (greedy longest prefix first), the word's first piece looked up with
        ``first_piece`` (entry id or -1); the unknown id if the word cannot be split."""
        if len(word) > self.max_chars_per_word:
            return (self.unk_id,)
        ids = []
        start = 0
        while start < len(word):
            end = len(word)
            found = -1
            while start < end:
                piece = word[start:end]
                found = self.pieces.get(PIECE_PREFIX + piece, -1) if start > 0 else first_piece(piece)
                if found >= 0:
                    break
                end -= 1
            if found < 0:
                return (self.unk_id,)
            ids.append(found)
            start = end
        return tuple(ids)

    def _word_pieces_uncached(self, word: str) -> tuple[int, ...]:
        """The fallback of a word no entry covers: its pieces, any word entry allowed as the first."""
        return self._greedy_pieces(word, lambda piece: self.trie.get(piece, (-1,))[0])

    def _teacher_token_count_uncached(self, word: str) -> int:
        """Tokens the teacher's WordPiece makes of one word: only its own whole-word tokens start a word."""
        return len(self._greedy_pieces(word, lambda piece: self.teacher_words.get(piece, -1)))

    def _marked_words(self, text: str) -> Iterator[tuple[str, int]]:
        """The words of ``text``, each marked as plain or part of a special token the teacher reads whole."""
        return words_with_special_marks(
            text, self._special_pattern, lambda piece: iter_words(piece, self.lowercase, self.strip_accents)
        )

    def _token_count(self, word: str, mark: int) -> int:
        """The teacher's tokens of a marked word (a special token's are all on its first word)."""
        return self._teacher_token_count(word) if mark == PLAIN else int(mark == SPECIAL_START)

    def teacher_token_count(self, text: str) -> int:
        """Tokens the teacher's tokenizer makes of ``text``, [CLS] and [SEP] included, before its cut."""
        return 2 + sum(self._token_count(word, mark) for word, mark in self._marked_words(text))

    def encode(self, text: str, max_entries: int = MAX_BAG_SIZE) -> list[int]:
        """Entry ids of ``text``, at most ``max_entries`` of them."""
        words = self._words(text, max_entries)
        bag: list[int] = []
        skip_first = self.skip_first
        for start, length, ids in self._segments(words):
            bag.extend(ids)
            for position in range(start, start + length):
                if words[position] in skip_first:
                    bag.extend(skip_id for skip_id, _ in self._skipgrams_at(words, position))
            if len(bag) >= max_entries:
                break
        return bag[:max_entries]

    def encode_with_positions(self, text: str, max_entries: int = MAX_BAG_SIZE) -> list[tuple[int, tuple[int, ...]]]:
        """The bag of ``text`` (as :meth:`encode`), each entry with the positions of the teacher's tokens it
        covers in the teacher's reading of the text ([CLS] is position 0).

        A word's fallback pieces get one token each when the teacher splits the word into as many, else all of
        the word's tokens; a skip-gram gets the tokens of its two words.
        """
        words, marks = self._window_words(text, max_entries)
        counts = [self._token_count(word, mark) for word, mark in zip(words, marks, strict=True)]
        first_token = list(itertools.accumulate(counts, initial=1))

        def span(start: int, end: int) -> tuple[int, ...]:
            """Tokens of words ``start``..``end - 1``; words inside a special token get that token."""
            return tuple(range(first_token[start], first_token[end])) or (first_token[start] - 1,)

        def tokens(position: int) -> tuple[int, ...]:
            return span(position, position + 1)

        bag: list[tuple[int, tuple[int, ...]]] = []
        for start, length, ids in self._segments(words):
            if length > 1 or len(ids) == 1:
                bag.append((ids[0], span(start, start + length)))
            elif len(ids) == counts[start]:
                bag.extend((entry, (first_token[start] + k,)) for k, entry in enumerate(ids))
            else:
                bag.extend((entry, tokens(start)) for entry in ids)
            for position in range(start, start + length):
                if words[position] in self.skip_first:
                    bag.extend(
                        (skip_id, tokens(position) + tokens(second))
                        for skip_id, second in self._skipgrams_at(words, position)
                    )
            if len(bag) >= max_entries:
                break
        return bag[:max_entries]

    def segments(
        self, text: str, max_entries: int = MAX_BAG_SIZE
    ) -> list[tuple[tuple[str, ...], tuple[int, ...], bool]]:
        """The longest-match steps of ``text``'s bag, for inspection: the words each step covers, its entry ids,
        and whether an entry matched (False: the WordPiece fallback of a word, or the unknown id). Skip-grams,
        added on top of the steps, are not among them."""
        words = self._words(text, max_entries)
        steps = []
        for start, length, ids in self._segments(words):
            matched = (
                len(ids) == 1
                and ids[0] != self.unk_id
                and (length > 1 or self.trie.get(words[start], (-1,))[0] == ids[0])
            )
            steps.append((tuple(words[start : start + length]), ids, matched))
        return steps

    def _segments(self, words: list[str]) -> Iterator[tuple[int, int, tuple[int, ...]]]:
        """Longest-match steps over ``words``: (first word, words covered, entry ids), in text order. A step
        is one n-gram or word entry, or the pieces of a word that no entry covers."""
        n = len(words)
        i = 0
        trie = self.trie
        while i < n:
            level = trie
            match_id, match_len = -1, 0
            j = i
            while j < n:
                node = level.get(words[j])
                if node is None:
                    break
                j += 1
                if node[0] >= 0:
                    match_id, match_len = node[0], j - i
                level = node[1]
            if match_len:
                yield i, match_len, (match_id,)
                i += match_len
            else:
                yield i, 1, self._word_pieces(words[i])
                i += 1

    def _skipgrams_at(self, words: list[str], position: int) -> Iterator[tuple[int, int]]:
        """Skip-gram entries whose first word is ``words[position]``: (entry id, position of the second word)."""
        first = words[position]
        for gap in range(1, self.skipgram_max_gap + 1):
            k = position + gap + 1
            if k >= len(words):
                break
            skip_id = self.skipgrams.get((first, words[k]))
            if skip_id is not None:
                yield skip_id, k

    def _words(self, text: str, max_entries: int) -> list[str]:
        """Words of ``text`` the teacher reads (all of them without a ``teacher_window``); stops early on huge
        texts (each word yields at least one entry)."""
        return self._window_words(text, max_entries)[0]

    def _window_words(self, text: str, max_entries: int) -> tuple[list[str], list[int]]:
        """:meth:`_words` and the mark of each word (plain or part of a special token)."""
        words, marks = [], []
        limit = max_entries + self.max_ngram + self.skipgram_max_gap + 1
        window = self.teacher_window - 2  # tokens the teacher reads besides [CLS] and [SEP]
        exact = False
        used = 0  # the teacher's tokens of the words kept; until exact, a bound (at most one per character)
        for word, mark in self._marked_words(text):
            if self.teacher_window:
                if not exact:
                    used += len(word)
                    if used > window:  # the text may not fit: count exactly from here on
                        exact = True
                        used = sum(self._token_count(w, m) for w, m in zip(words, marks, strict=True))
                if exact:
                    used += self._token_count(word, mark)
                    if used > window:
                        break
            words.append(word)
            marks.append(mark)
            if len(words) >= limit * self.max_ngram:
                break
        return words, marks

    def words(self, text: str) -> Iterator[str]:
        """The normalized words of ``text`` (for inspection and vocabulary mining)."""
        return iter_words(text, self.lowercase, self.strip_accents)


class BertApproxTokenizer(PreTrainedTokenizer):
    """Tokenizer that maps text to a bag of vocabulary entry ids (``input_ids`` + ``attention_mask``).

    No special tokens are added: a bag has no [CLS] or [SEP]. Padding uses ``[PAD]`` (id 0).
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | None = None,
        entries: list[str] | None = None,
        unk_token: str = "[UNK]",
        pad_token: str = "[PAD]",
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        skipgram_max_gap: int = 2,
        model_max_length: int = MAX_BAG_SIZE,
        teacher_window: int = 0,
        wordpiece_entries: int = 0,
        teacher_special_tokens: list[str] | None = None,
        **kwargs,
    ) -> None:
        if entries is None:
            if vocab_file is None:
                raise ValueError("BertApproxTokenizer needs a vocab_file or a list of entries")
            entries = load_entries(vocab_file)
        self.do_lower_case = do_lower_case
        self.strip_accents = strip_accents
        self.skipgram_max_gap = skipgram_max_gap
        self.bag_encoder = BagEncoder(
            entries,
            unk_token=str(unk_token),
            special_tokens={str(pad_token), str(unk_token)},
            lowercase=do_lower_case,
            strip_accents=strip_accents,
            skipgram_max_gap=skipgram_max_gap,
            teacher_window=teacher_window,
            wordpiece_entries=wordpiece_entries,
            teacher_special_tokens=teacher_special_tokens,
        )
        # The compiled twin of bag_encoder (same bags), or None: then bag_encoder tokenizes, in pure Python.
        self.compiled_encoder = compiled_bag_encoder(self.bag_encoder)
        kwargs.setdefault("padding_side", "right")
        super().__init__(
            unk_token=unk_token,
            pad_token=pad_token,
            do_lower_case=do_lower_case,
            strip_accents=strip_accents,
            skipgram_max_gap=skipgram_max_gap,
            teacher_window=teacher_window,
            wordpiece_entries=wordpiece_entries,
            teacher_special_tokens=teacher_special_tokens,
            model_max_length=min(model_max_length, MAX_BAG_SIZE),
            special_tokens_pattern="none",
            **kwargs,
        )

    # --- vocabulary ---------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.bag_encoder.entries)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.bag_encoder.entry_to_id)

    def _convert_token_to_id(self, token: str) -> int:
        return self.bag_encoder.entry_to_id.get(token, self.bag_encoder.unk_id)

    def _convert_id_to_token(self, index: int) -> str:
        size = len(self.bag_encoder.entries)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < size:
            raise ValueError(f"token id {index!r} is not an entry id: ids are integers in [0, {size})")
        return self.bag_encoder.entries[index]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str]:
        name = (filename_prefix + "-" if filename_prefix else "") + VOCAB_FILES_NAMES["vocab_file"]
        path = os.path.join(save_directory, name)
        with open(path, "w", encoding="utf-8") as handle:
            for entry in self.bag_encoder.entries:
                handle.write(entry + "\n")
        return (path,)

    # --- tokenization -------------------------------------------------------------------------
    def tokenize(self, text: str, **kwargs) -> list[str]:
        """Entry strings of ``text`` (its bag, in text order)."""
        entries = self.bag_encoder.entries
        return [entries[i] for i in self.encode_bags([text])[0]]

    def _tokenize(self, text: str, **kwargs) -> list[str]:
        return self.tokenize(text)

    def build_inputs_with_special_tokens(self, token_ids_0, token_ids_1=None):
        return list(token_ids_0) + (list(token_ids_1) if token_ids_1 else [])

    def encode_bags(self, texts: list[str], max_entries: int = MAX_BAG_SIZE) -> list[list[int]]:
        """Entry ids of each text: the fast path, with no padding and no tensors."""
        check_texts(texts)
        if self.compiled_encoder is not None and max_entries >= 0:
            return self.compiled_encoder.encode_batch(texts, max_entries)
        return [self.bag_encoder.encode(text, max_entries) for text in texts]

    def encode_bags_flat(self, texts: list[str], max_entries: int = MAX_BAG_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_bags` as flat arrays ``(ids, offsets)``: every entry id (int32), text after text, and where
        each text's bag starts (int64, ``len(texts) + 1`` of them; bag ``k`` is ``ids[offsets[k]:offsets[k + 1]]``).
        The compiled path builds them without a Python object per entry."""
        check_texts(texts)
        if self.compiled_encoder is not None and max_entries >= 0:
            return self.compiled_encoder.encode_flat(texts, max_entries)
        return flatten_bags(self.encode_bags(texts, max_entries))

    def _encode_plus(self, text, text_pair=None, **kwargs) -> BatchEncoding:
        single = isinstance(text, str)
        fast = (
            text_pair is None
            and not kwargs.get("is_split_into_words")
            and (single or (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)))
        )
        if not fast:
            if isinstance(text, (list, tuple)) and text and not isinstance(text[0], (str, int, list, tuple)):
                check_texts(text)
            return super()._encode_plus(text, text_pair=text_pair, **kwargs)
        texts = [text] if single else list(text)
        max_length = kwargs.get("max_length")
        truncation = kwargs.get("truncation_strategy", TruncationStrategy.DO_NOT_TRUNCATE)
        limit = MAX_BAG_SIZE
        if truncation != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None:
            limit = min(limit, max_length)
        bags = self.encode_bags(texts, limit)
        padding = kwargs.get("padding_strategy", PaddingStrategy.DO_NOT_PAD)
        return_tensors = kwargs.get("return_tensors")
        if single and padding == PaddingStrategy.DO_NOT_PAD:
            data = {"input_ids": bags[0], "attention_mask": [1] * len(bags[0])}
            return BatchEncoding(data, tensor_type=return_tensors, prepend_batch_axis=return_tensors is not None)
        if padding == PaddingStrategy.DO_NOT_PAD and return_tensors is not None and len({len(b) for b in bags}) > 1:
            padding = PaddingStrategy.LONGEST  # ragged bags cannot become one tensor
        data = pad_bags(
            bags,
            self.pad_token_id,
            max_length if padding == PaddingStrategy.MAX_LENGTH else None,
            kwargs.get("pad_to_multiple_of"),
            do_pad=padding != PaddingStrategy.DO_NOT_PAD,
        )
        if single and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    # --- construction -------------------------------------------------------------------------
    @classmethod
    def from_entries(cls, entries: list[str], **kwargs) -> BertApproxTokenizer:
        """A tokenizer over an in-memory list of entries (``[PAD]`` must be entry 0)."""
        return cls(entries=entries, **kwargs)


def check_texts(texts) -> None:
    """Raise a clear error unless ``texts`` is a sequence of strings."""
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise TypeError(f"expected a list of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"item {position} is {type(text).__name__}, not str")


def pad_bags(
    bags: list[list[int]],
    pad_id: int,
    length: int | None = None,
    multiple_of: int | None = None,
    do_pad: bool = True,
) -> dict[str, list[list[int]]]:
    """Right-pad bags to a common length (at least one slot) with their attention masks."""
    if not do_pad:
        return {"input_ids": bags, "attention_mask": [[1] * len(b) for b in bags]}
    width = max([len(b) for b in bags] + [1])
    if length is not None:
        width = max(width, length)
    if multiple_of:
        width = -(-width // multiple_of) * multiple_of
    ids = [b + [pad_id] * (width - len(b)) for b in bags]
    mask = [[1] * len(b) + [0] * (width - len(b)) for b in bags]
    return {"input_ids": ids, "attention_mask": mask}


def pad_bag_arrays(bags: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``input_ids`` and ``attention_mask`` (int64 arrays, at least one column) of a batch of bags:
    the fast path for bags tokenized earlier (training, exported graphs)."""
    lengths = np.fromiter(map(len, bags), dtype=np.int64, count=len(bags))
    width = max(int(lengths.max(initial=0)), 1)
    filled = np.arange(width) < lengths[:, None]
    ids = np.full((len(bags), width), pad_id, dtype=np.int64)
    ids[filled] = np.fromiter(itertools.chain.from_iterable(bags), dtype=np.int64, count=int(lengths.sum()))
    return ids, filled.astype(np.int64)


def flatten_bags(bags: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Bags as :meth:`BertApproxTokenizer.encode_bags_flat` gives them: flat int32 ids and int64 offsets."""
    offsets = np.zeros(len(bags) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, bags), dtype=np.int64, count=len(bags)), out=offsets[1:])
    ids = np.fromiter(itertools.chain.from_iterable(bags), dtype=np.int32, count=int(offsets[-1]))
    return ids, offsets


def pad_flat_bags(
    ids: np.ndarray, offsets: np.ndarray, rows: np.ndarray, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`pad_bag_arrays` of the bags ``rows`` of flat bags (``ids``, ``offsets`` as
    :func:`flatten_bags` gives them), in that order: the same int64 arrays, without Python objects per entry."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    width = max(int(lengths.max(initial=0)), 1)
    columns = np.arange(width)
    filled = columns < lengths[:, None]
    padded = np.full((len(rows), width), pad_id, dtype=np.int64)
    padded[filled] = ids[(starts[:, None] + columns)[filled]]
    return padded, filled.astype(np.int64)


def load_entries(path: str) -> list[str]:
    """Read a one-entry-per-line vocabulary file, with a clear error naming a missing or bad file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"vocabulary file not found: {path}")
    try:
        with open(path, encoding="utf-8") as handle:
            entries = handle.read().split("\n")
    except UnicodeDecodeError as error:
        raise ValueError(f"vocabulary file {path} is not valid UTF-8: {error}") from error
    if entries and entries[-1] == "":
        entries.pop()
    if not entries:
        raise ValueError(f"vocabulary file {path} is empty")
    return entries
