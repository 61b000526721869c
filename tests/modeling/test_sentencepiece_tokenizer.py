"""The SentencePiece wrapper follows Gemma's conventions and PaliGemma's sequence layout."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.tokenizer import Tokenizer, TokenizerError, train_tokenizer
from tests.helpers.models import REPORTS


@pytest.fixture(scope="module")
def tok(tokenizer_path) -> Tokenizer:
    return Tokenizer(tokenizer_path)


def test_special_ids_are_gemmas(tok):
    assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
    assert tok.sp.id_to_piece(3) == "<unk>"


def test_text_round_trips_including_newlines_digits_and_unseen_characters(tok):
    text = "No effusion.\nHeart 12 cm; opacité résiduelle"
    assert tok.decode(tok.encode(text)) == text


def test_prompt_is_bos_prefix_newline(tok):
    ids = tok.prompt_ids("findings")
    assert ids[0] == 2 and ids[-1] == tok.newline_id
    assert ids[1:-1] == tok.encode("findings")


def test_training_example_masks_loss_on_suffix_and_eos_only(tok):
    ids, types, mask, loss = tok.training_example("findings", "Lungs are clear.", 32)
    prompt = tok.prompt_ids("findings")
    target = tok.encode("Lungs are clear.") + [1]
    n = len(prompt) + len(target)
    assert ids[:n].tolist() == prompt + target and (ids[n:] == 0).all()
    assert types.tolist() == [0] * len(prompt) + [1] * (32 - len(prompt))
    assert mask.tolist() == [1] * n + [0] * (32 - n)
    assert loss.tolist() == [0] * len(prompt) + [1] * len(target) + [0] * (32 - n)
    assert all(x.dtype == np.int32 and x.shape == (32,) for x in (ids, types, mask, loss))


def test_training_example_truncates_to_max_len(tok):
    ids, types, mask, loss = tok.training_example("findings", REPORTS[0] * 3, 16)
    assert ids.shape == (16,) and mask.all() and 1 not in ids.tolist()


def test_decode_stops_at_eos_and_skips_padding(tok):
    ids = [2, *tok.encode("clear"), 1, *tok.encode("junk"), 0]
    assert tok.decode(ids) == "clear"


def test_loc_and_seg_tokens_are_single_pieces(tmp_path):
    path = train_tokenizer(REPORTS * 5, tmp_path / "t.model", vocab_size=1500, loc_seg_tokens=True)
    tok = Tokenizer(path)
    ids = tok.encode("<loc0000><loc1023><seg127>")
    assert len(ids) == 3 and tok.decode(ids) == "<loc0000><loc1023><seg127>"


def test_a_model_with_other_special_ids_is_refused(tmp_path):
    import sentencepiece as spm
    spm.SentencePieceTrainer.train(sentence_iterator=iter(REPORTS * 5),
                                   model_prefix=str(tmp_path / "x"), vocab_size=60, minloglevel=2)
    with pytest.raises(TokenizerError, match=r"\(0, 1, 2\)"):
        Tokenizer(tmp_path / "x.model")
