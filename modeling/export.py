"""Export a loaded model (a bundle, usually) for other tools: a transformers directory that
`PaliGemmaForConditionalGeneration` and `PaliGemmaProcessor` load (and so vLLM serves), or a
big_vision `.npz`.

The transformers directory holds:

    config.json, generation_config.json      PaliGemmaConfig (Gemma 2 text, SigLIP vision)
    model-0000i-of-0000n.safetensors + index  weights in the Hub layout (`modeling.names.HUB`)
    tokenizer.model, tokenizer_config.json,   GemmaTokenizer; `<image>` added at id vocab_size
    special_tokens_map.json
    preprocessor_config.json                 SiglipImageProcessor: square resize, [-1, 1]

transformers gives `<image>` the first id after the SentencePiece pieces, and the model reads
image positions by `image_token_index`, so both must be `vocab_size`: a tokenizer with fewer
pieces than the model has embedding rows (a small trained tokenizer) is padded with UNUSED
pieces `<unusedN>`, which SentencePiece never produces, so text encodes exactly as before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from modeling.convert import hf_config_dict, write_big_vision_npz, write_hf_checkpoint
from modeling.names import CheckpointError
from modeling.runtime import PaliGemma

IMAGE_TOKEN = "<image>"


def padded_tokenizer_model(tokenizer_path: str | Path, size: int) -> bytes:
    """The SentencePiece model at `tokenizer_path` with UNUSED pieces appended up to `size`."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(Path(tokenizer_path).read_bytes())
    have = len(proto.pieces)
    if have > size:
        raise CheckpointError(f"the tokenizer has {have} pieces but the model only {size} "
                              "embedding rows")
    for i in range(size - have):
        piece = proto.pieces.add()
        piece.piece, piece.score = f"<unused{i}>", 0.0
        piece.type = pb.ModelProto.SentencePiece.UNUSED
    return proto.SerializeToString()


def _to_host(params: Any, dtype: np.dtype) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda a: np.asarray(a).astype(dtype), params)


def export_hf(model: PaliGemma, out_dir: str | Path, dtype: str = "bfloat16",
              max_shard_bytes: int = 2 << 30) -> Path:
    """Write `model` as a transformers PaliGemma directory with tokenizer and image processor."""
    if model.tokenizer is None:
        raise CheckpointError("the model has no tokenizer; an export needs one for the processor")
    out = Path(out_dir)
    config, vocab = model.config, model.config.text.vocab_size
    write_hf_checkpoint(out, config, _to_host(model.params, np.dtype(_np_dtype(dtype))),
                        max_shard_bytes=max_shard_bytes)
    hf = hf_config_dict(config)
    hf["dtype"] = hf["text_config"]["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    defaults = model.generation_defaults or {}
    generation = {"bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0,
                  **({"max_new_tokens": defaults["max_new_tokens"]}
                     if defaults.get("max_new_tokens") else {})}
    (out / "generation_config.json").write_text(json.dumps(generation, indent=2))
    (out / "tokenizer.model").write_bytes(padded_tokenizer_model(model.tokenizer.path, vocab))
    special = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
               "unk_token": "<unk>", "additional_special_tokens": [IMAGE_TOKEN]}
    image_token = {"content": IMAGE_TOKEN, "lstrip": False, "normalized": False,
                   "rstrip": False, "single_word": False, "special": True}
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "processor_class": "PaliGemmaProcessor",
        "add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(vocab): image_token}, **special}, indent=2))
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    size = config.image_size
    (out / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "SiglipImageProcessor", "processor_class": "PaliGemmaProcessor",
        "do_resize": True, "size": {"height": size, "width": size}, "resample": 3,
        "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "do_convert_rgb": True,
        "image_seq_length": config.num_image_tokens}, indent=2))
    return out


def export_npz(model: PaliGemma, out: str | Path, dtype: str = "bfloat16") -> Path:
    """Write `model` as a big_vision PaliGemma `.npz` (scanned stacks, bfloat16 as '|V2').

    `out` ending in `.npz` is the file (tokenizer beside it as `<stem>.model`); otherwise a
    directory gets `model.npz` and `tokenizer.model`.
    """
    out = Path(out)
    if out.suffix == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        npz, tok = out, out.with_suffix(".model")
    else:
        out.mkdir(parents=True, exist_ok=True)
        npz, tok = out / "model.npz", out / "tokenizer.model"
    write_big_vision_npz(npz, _to_host(model.params, np.dtype(_np_dtype(dtype))))
    if model.tokenizer is not None:
        shutil.copyfile(model.tokenizer.path, tok)
    return npz


def _np_dtype(dtype: str) -> Any:
    import ml_dtypes

    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"export dtype must be float32 or bfloat16, not {dtype!r}")
    return np.float32 if dtype == "float32" else ml_dtypes.bfloat16
