"""SentencePiece tokenizer with Gemma / PaliGemma conventions (pad 0, eos 1, bos 2, unk 3).

Sequences follow big_vision: prefix, separator and suffix are tokenized separately and joined as
[BOS] prefix ["\\n"] suffix [EOS]; prefix tokens have token type 0, suffix tokens 1.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3


class TokenizerError(ValueError):
    """The SentencePiece model is missing or does not follow Gemma's special-token ids."""


def loc_tokens() -> list[str]:
    """PaliGemma's 1024 location tokens <loc0000> .. <loc1023>."""
    return [f"<loc{i:04d}>" for i in range(1024)]


def seg_tokens() -> list[str]:
    """PaliGemma's 128 segmentation tokens <seg000> .. <seg127>."""
    return [f"<seg{i:03d}>" for i in range(128)]


class Tokenizer:
    """A SentencePiece model file wrapped with PaliGemma's sequence layout."""

    def __init__(self, model_path: str | Path) -> None:
        path = Path(model_path)
        if not path.is_file():
            raise TokenizerError(f"tokenizer model not found: {path}")
        self.path = path
        self.sp = spm.SentencePieceProcessor(model_file=str(path))
        ids = (self.sp.pad_id(), self.sp.eos_id(), self.sp.bos_id())
        if ids != (PAD_ID, EOS_ID, BOS_ID):
            raise TokenizerError(
                f"{path.name} has pad/eos/bos ids {ids}; PaliGemma needs (0, 1, 2) - "
                "train it with modeling.tokenizer.train_tokenizer or use the Gemma tokenizer")
        newline = self.sp.encode("\n")
        if len(newline) != 1:
            raise TokenizerError(f"{path.name} does not encode a newline as one token")
        self.newline_id = newline[0]

    pad_id = PAD_ID
    eos_id = EOS_ID
    bos_id = BOS_ID

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        """Text -> token ids (no BOS/EOS)."""
        return list(self.sp.encode(text))

    def decode(self, ids: Iterable[int]) -> str:
        """Token ids -> text; stops at the first EOS, drops pad and BOS; ids beyond the
        tokenizer's vocabulary (a model may have more embedding rows) decode as <unk>."""
        out = []
        size = self.vocab_size
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(i if 0 <= i < size else UNK_ID)
        return self.sp.decode(out)

    def prompt_ids(self, prefix: str) -> list[int]:
        """[BOS] + prefix + ["\\n"]: the generation prompt."""
        return [BOS_ID, *self.encode(prefix), self.newline_id]

    def training_example(self, prefix: str, suffix: str, max_len: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(input_ids, token_type_ids, input_mask, loss_mask), each int32 [max_len].

        Layout [BOS] prefix ["\\n"] suffix [EOS] [PAD ...]; token type 0 on the prefix part and 1
        on suffix, EOS and padding (as big_vision's mask_ar); input_mask 1 on real tokens;
        loss_mask 1 where the token is a target (suffix tokens and EOS): the model's logits at
        position i - 1 predict token i. Longer sequences are truncated at max_len (the EOS may
        be cut, as in big_vision).
        """
        prompt = self.prompt_ids(prefix)
        target = [*self.encode(suffix), EOS_ID]
        ids = (prompt + target)[:max_len]
        n, n_prompt = len(ids), min(len(prompt), max_len)
        input_ids = np.full((max_len,), PAD_ID, np.int32)
        input_ids[:n] = ids
        token_type = np.ones((max_len,), np.int32)
        token_type[:n_prompt] = 0
        input_mask = np.zeros((max_len,), np.int32)
        input_mask[:n] = 1
        loss_mask = np.zeros((max_len,), np.int32)
        loss_mask[n_prompt:n] = 1
        return input_ids, token_type, input_mask, loss_mask


def train_tokenizer(texts: Iterable[str], out_path: str | Path, vocab_size: int = 1000, *,
                    loc_seg_tokens: bool = False, user_symbols: Sequence[str] = (),
                    byte_fallback: bool = True, seed_sentencepieces: int | None = None) -> Path:
    """Train a SentencePiece (BPE) model with Gemma's conventions and write it to out_path.

    pad 0, eos 1, bos 2, unk 3; "\\n" is one piece; no text normalisation, no dummy prefix,
    digits split, byte fallback (so any text round-trips). loc_seg_tokens adds PaliGemma's
    <locNNNN> and <segNNN> pieces (1152 extra pieces: vocab_size must leave room).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    symbols = ["\n", *user_symbols]
    if loc_seg_tokens:
        symbols += loc_tokens() + seg_tokens()
    model = io.BytesIO()
    options = dict(
        sentence_iterator=iter(list(texts)), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=symbols, normalization_rule_name="identity",
        remove_extra_whitespaces=False, add_dummy_prefix=False, split_digits=True,
        byte_fallback=byte_fallback, allow_whitespace_only_pieces=True,
        character_coverage=1.0, hard_vocab_limit=False, minloglevel=2,
    )
    if seed_sentencepieces is not None:
        options["seed_sentencepiece_size"] = seed_sentencepieces
    spm.SentencePieceTrainer.train(**options)
    out_path.write_bytes(model.getvalue())
    return out_path
