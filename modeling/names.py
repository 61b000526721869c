"""One explicit name table per checkpoint format: which tensor of a file fills which slice of the
model tree, and how it is reshaped on the way.

The model tree's paths are big_vision's (`modeling.model.param_shapes`: `img/...`, `llm/...`,
layers stacked on a leading axis). A table maps each checkpoint tensor name to a `TensorSpec`:
`params[path][index] == from_hf(tensor)` and `tensor == to_hf(params[path][index])`; the
transforms are pure reshapes and transposes, so round trips are exact.

Formats (the layout is detected from the tensor names, `detect_hf_layout` / `npz_table`):

    HF_LAYOUTS   transformers-style safetensors, four spellings of the same tensors:
      hub             google/paligemma2-* on the Hub, transformers < 4.52
                      vision_tower.vision_model.* language_model.model.* multi_modal_projector.*
      transformers-4.5x  a 4.52-4.57 model's state dict (torch.save, safetensors.torch, trainers)
                      model.vision_tower.vision_model.* model.language_model.* lm_head.weight
      transformers-5  what transformers 5.x `save_pretrained` writes (SigLIP without vision_model)
                      vision_tower.* language_model.model.* multi_modal_projector.*
      transformers-5-state  a 5.x model's state dict, PEFT adapter module names
                      model.vision_tower.* model.language_model.* lm_head.weight
    npz_table    big_vision `.npz`: our paths themselves, layers scanned (`encoderblock`,
                 `layers` stacks) or unscanned (`encoderblock_{i}`, `layers/{i}`), optionally
                 under `params/` (a big_vision training checkpoint)
    bundle_table our bundles' `params/` (Orbax): the model paths, unchanged

For example, with the Hub layout, `language_model.model.layers.3.self_attn.k_proj.weight`
(K*H, D) is `llm/layers/attn/kv_einsum/w[3, 0]` (K, D, H) and the `v_proj` of that layer is
`[3, 1]` of the same array.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from modeling.config import ModelConfig

Array = np.ndarray


class CheckpointError(ValueError):
    """A checkpoint does not match the model it is loaded into (names the tensor)."""


class UnusedTensorsWarning(UserWarning):
    """A checkpoint carries tensors PaliGemma does not use (they are skipped)."""


@dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor = `params[path][index]` transformed by `to_hf` (inverse: `from_hf`)."""

    hf_name: str
    path: str
    index: tuple[int, ...]
    to_hf: Callable[[Array], Array]
    from_hf: Callable[[Array], Array]


@dataclass(frozen=True)
class HfLayout:
    """Where one transformers-style spelling puts the four parts of PaliGemma."""

    name: str
    vision: str     # prefix of SigLIP's embeddings. / encoder.layers. / post_layernorm.
    text: str       # prefix of Gemma 2's embed_tokens / layers. / norm
    projector: str  # prefix of linear.{weight,bias}
    lm_head: str    # the output projection, tied to the embedding (read but not used)

    def unused(self, name: str) -> bool:
        """Tensors this layout may carry that PaliGemma does not use: SigLIP's pooling head
        (written when a config leaves `vision_use_head` at its default) and the tied lm_head."""
        return name.startswith(f"{self.vision}head.") or name == self.lm_head


HUB = HfLayout("hub", "vision_tower.vision_model.", "language_model.model.",
               "multi_modal_projector.", "language_model.lm_head.weight")
TRANSFORMERS_4_5X = HfLayout("transformers-4.5x", "model.vision_tower.vision_model.",
                             "model.language_model.", "model.multi_modal_projector.",
                             "lm_head.weight")
TRANSFORMERS_5 = HfLayout("transformers-5", "vision_tower.", "language_model.model.",
                          "multi_modal_projector.", "language_model.lm_head.weight")
TRANSFORMERS_5_STATE = HfLayout("transformers-5-state", "model.vision_tower.",
                                "model.language_model.", "model.multi_modal_projector.",
                                "lm_head.weight")
HF_LAYOUTS = (HUB, TRANSFORMERS_4_5X, TRANSFORMERS_5, TRANSFORMERS_5_STATE)


def _same(a: Array) -> Array:
    return a


def _t(a: Array) -> Array:
    return a.T


def hf_tensor_specs(config: ModelConfig, layout: HfLayout = HUB) -> list[TensorSpec]:
    """The name table of a transformers-style checkpoint in `layout` (Hub names by default)."""
    v, t = config.vision, config.text
    wv, nv, hv = v.width, v.num_heads, v.head_dim
    D, N, K, H = t.width, t.num_heads, t.num_kv_heads, t.head_dim
    vt, lm, mm = layout.vision, layout.text, layout.projector
    blk = "img/Transformer/encoderblock"
    att = f"{blk}/MultiHeadDotProductAttention_0"
    specs = [
        TensorSpec(f"{vt}embeddings.patch_embedding.weight", "img/embedding/kernel", (),
                   lambda a: a.transpose(3, 2, 0, 1), lambda a: a.transpose(2, 3, 1, 0)),
        TensorSpec(f"{vt}embeddings.patch_embedding.bias", "img/embedding/bias", (),
                   _same, _same),
        TensorSpec(f"{vt}embeddings.position_embedding.weight", "img/pos_embedding", (),
                   lambda a: a.reshape(-1, wv), lambda a: a[None]),
        TensorSpec(f"{vt}post_layernorm.weight", "img/Transformer/encoder_norm/scale", (),
                   _same, _same),
        TensorSpec(f"{vt}post_layernorm.bias", "img/Transformer/encoder_norm/bias", (),
                   _same, _same),
        TensorSpec(f"{mm}linear.weight", "img/head/kernel", (), _t, _t),
        TensorSpec(f"{mm}linear.bias", "img/head/bias", (), _same, _same),
        TensorSpec(f"{lm}embed_tokens.weight", "llm/embedder/input_embedding", (),
                   _same, _same),
        TensorSpec(f"{lm}norm.weight", "llm/final_norm/scale", (), _same, _same),
    ]
    for i in range(v.depth):
        pre = f"{vt}encoder.layers.{i}"
        for hf, ours in (("layer_norm1", "LayerNorm_0"), ("layer_norm2", "LayerNorm_1")):
            specs.append(TensorSpec(f"{pre}.{hf}.weight", f"{blk}/{ours}/scale", (i,),
                                    _same, _same))
            specs.append(TensorSpec(f"{pre}.{hf}.bias", f"{blk}/{ours}/bias", (i,),
                                    _same, _same))
        for hf, ours in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            specs.append(TensorSpec(f"{pre}.self_attn.{hf}.weight", f"{att}/{ours}/kernel", (i,),
                                    lambda a: a.reshape(wv, -1).T,
                                    lambda a: a.T.reshape(wv, nv, hv)))
            specs.append(TensorSpec(f"{pre}.self_attn.{hf}.bias", f"{att}/{ours}/bias", (i,),
                                    lambda a: a.reshape(-1), lambda a: a.reshape(nv, hv)))
        specs.append(TensorSpec(f"{pre}.self_attn.out_proj.weight", f"{att}/out/kernel", (i,),
                                lambda a: a.reshape(-1, wv).T,
                                lambda a: a.T.reshape(nv, hv, wv)))
        specs.append(TensorSpec(f"{pre}.self_attn.out_proj.bias", f"{att}/out/bias", (i,),
                                _same, _same))
        for hf, ours in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
            specs.append(TensorSpec(f"{pre}.mlp.{hf}.weight", f"{blk}/MlpBlock_0/{ours}/kernel",
                                    (i,), _t, _t))
            specs.append(TensorSpec(f"{pre}.mlp.{hf}.bias", f"{blk}/MlpBlock_0/{ours}/bias",
                                    (i,), _same, _same))
    lay = "llm/layers"
    for i in range(t.depth):
        pre = f"{lm}layers.{i}"
        specs.append(TensorSpec(f"{pre}.self_attn.q_proj.weight", f"{lay}/attn/q_einsum/w", (i,),
                                lambda a: a.transpose(0, 2, 1).reshape(N * H, D),
                                lambda a: a.reshape(N, H, D).transpose(0, 2, 1)))
        for c, hf in enumerate(("k_proj", "v_proj")):
            specs.append(TensorSpec(f"{pre}.self_attn.{hf}.weight", f"{lay}/attn/kv_einsum/w",
                                    (i, c),
                                    lambda a: a.transpose(0, 2, 1).reshape(K * H, D),
                                    lambda a: a.reshape(K, H, D).transpose(0, 2, 1)))
        specs.append(TensorSpec(f"{pre}.self_attn.o_proj.weight",
                                f"{lay}/attn/attn_vec_einsum/w", (i,),
                                lambda a: a.transpose(2, 0, 1).reshape(D, N * H),
                                lambda a: a.reshape(D, N, H).transpose(1, 2, 0)))
        specs.append(TensorSpec(f"{pre}.mlp.gate_proj.weight", f"{lay}/mlp/gating_einsum", (i, 0),
                                _t, _t))
        specs.append(TensorSpec(f"{pre}.mlp.up_proj.weight", f"{lay}/mlp/gating_einsum", (i, 1),
                                _t, _t))
        specs.append(TensorSpec(f"{pre}.mlp.down_proj.weight", f"{lay}/mlp/linear", (i,), _t, _t))
        for hf, ours in (("input_layernorm", "pre_attention_norm"),
                         ("post_attention_layernorm", "post_attention_norm"),
                         ("pre_feedforward_layernorm", "pre_ffw_norm"),
                         ("post_feedforward_layernorm", "post_ffw_norm")):
            specs.append(TensorSpec(f"{pre}.{hf}.weight", f"{lay}/{ours}/scale", (i,),
                                    _same, _same))
    return specs


def hf_table(config: ModelConfig, layout: HfLayout = HUB, tied_to_lm_head: bool = False
             ) -> dict[str, TensorSpec]:
    """{checkpoint tensor name: spec} for a transformers-style checkpoint in `layout`.

    tied_to_lm_head: the file stores the tied embedding only as the lm_head (what
    `safetensors.torch.save_model` keeps of a state dict), so the table reads it from there.
    """
    table = {}
    for spec in hf_tensor_specs(config, layout):
        if tied_to_lm_head and spec.hf_name == f"{layout.text}embed_tokens.weight":
            spec = replace(spec, hf_name=layout.lm_head)
        table[spec.hf_name] = spec
    return table


def detect_hf_layout(names: Iterable[str]) -> HfLayout:
    """The layout whose patch embedding and token embedding names the checkpoint has.

    >>> detect_hf_layout(["vision_tower.embeddings.patch_embedding.weight",
    ...                   "language_model.model.norm.weight"]).name
    'transformers-5'
    """
    names = set(names)
    found = [layout for layout in HF_LAYOUTS
             if f"{layout.vision}embeddings.patch_embedding.weight" in names
             and f"{layout.text}norm.weight" in names]
    if len(found) == 1:
        return found[0]
    if not found:
        sample = ", ".join(sorted(names)[:4])
        raise CheckpointError(
            "not a PaliGemma checkpoint in a known layout "
            "(hub, transformers-4.5x, transformers-5): "
            "no '<vision>embeddings.patch_embedding.weight' + '<text>norm.weight' pair; "
            f"its tensors start {sample}")
    raise CheckpointError("the checkpoint mixes layouts "
                          f"{', '.join(layout.name for layout in found)}; save it again")


def detect_module_layout(config: ModelConfig, tensors: Iterable[str]) -> HfLayout:
    """The layout whose name table holds every (PEFT) tensor name, as `module.weight` /
    `module.bias`, or marks it unused; the first such layout when several do (their tables
    agree on those names)."""
    tensors = list(tensors)
    misses = {}
    for layout in (TRANSFORMERS_5_STATE, TRANSFORMERS_4_5X, HUB, TRANSFORMERS_5):
        table = hf_table(config, layout)
        misses[layout] = [t for t in tensors if t not in table and not layout.unused(t)]
        if not misses[layout]:
            return layout
    closest = min(misses.values(), key=len)
    raise CheckpointError(f"adapter module(s) {', '.join(closest[:3])} are not linear layers of "
                          "this PaliGemma 2 (an adapter for another model or size?)")


# ----------------------------------------------------------------------------- big_vision npz

_VISION_STACK = "img/Transformer/encoderblock/"
_LLM_STACK = "llm/layers/"
# big_vision's ViT with scan=False names each block `encoderblock_{i}`; its Gemma pushes one scope
# per layer, `layers/{i}` (models/vit.py `Encoder`, models/ppp/gemma.py `Model`).
_UNSCANNED = ((_VISION_STACK, re.compile(r"^img/Transformer/encoderblock_(\d+)/(.+)$"),
               "img/Transformer/encoderblock_{i}/{rest}"),
              (_LLM_STACK, re.compile(r"^llm/layers/(\d+)/(.+)$"), "llm/layers/{i}/{rest}"))
NPZ_UNUSED = re.compile(r"^img/MAPHead_0/")  # the SigLIP pooling head of pool_type="map"


@dataclass(frozen=True)
class NpzLayout:
    """How a big_vision `.npz` spells the tree: a `params/` prefix (training checkpoints) and,
    per tower, scanned stacks or one entry per block."""

    prefix: str
    vision_scanned: bool
    llm_scanned: bool


def detect_npz_layout(names: Iterable[str]) -> NpzLayout:
    """Read the prefix and the scan style of each tower off the names."""
    names = list(names)
    prefix = "params/" if any(n.startswith("params/") for n in names) else ""
    keys = [n.removeprefix(prefix) for n in names]
    vision, llm = (not any(pattern.match(k) for k in keys) for _, pattern, _ in _UNSCANNED)
    return NpzLayout(prefix, vision, llm)


def npz_table(shapes: dict[str, tuple[int, ...]], layout: NpzLayout) -> dict[str, TensorSpec]:
    """{npz name: spec} for a big_vision PaliGemma `.npz` whose model tree has these `shapes`
    (`{path: shape}` of `param_shapes`).

    >>> table = npz_table({"llm/layers/mlp/linear": (2, 8, 4)}, NpzLayout("", True, False))
    >>> sorted((k, v.path, v.index) for k, v in table.items())[1]
    ('llm/layers/1/mlp/linear', 'llm/layers/mlp/linear', (1,))
    """
    table = {}
    for path, shape in shapes.items():
        for stack, _, template in _UNSCANNED:
            scanned = layout.vision_scanned if stack == _VISION_STACK else layout.llm_scanned
            if path.startswith(stack) and not scanned:
                rest = path.removeprefix(stack)
                for i in range(shape[0]):
                    name = layout.prefix + template.format(i=i, rest=rest)
                    table[name] = TensorSpec(name, path, (i,), _same, _same)
                break
        else:
            table[layout.prefix + path] = TensorSpec(layout.prefix + path, path, (), _same, _same)
    return table


def npz_stacked_shapes(shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Model path -> stacked shape, from the shapes of an `.npz` in any layout (unscanned blocks
    are counted into a leading axis; names outside the model's trees are left out)."""
    layout = detect_npz_layout(shapes)
    out: dict[str, tuple[int, ...]] = {}
    depth: dict[str, int] = {}
    for name, shape in shapes.items():
        if not name.startswith(layout.prefix):
            continue
        key = name.removeprefix(layout.prefix)
        for stack, pattern, _ in _UNSCANNED:
            m = pattern.match(key)
            if m:
                path = stack + m.group(2)
                depth[path] = max(depth.get(path, 0), int(m.group(1)) + 1)
                out[path] = tuple(shape)
                break
        else:
            out[key] = tuple(shape)
    return {p: ((depth[p],) + s if p in depth else s) for p, s in out.items()}


# ----------------------------------------------------------------------------- bundles


def bundle_table(paths: Iterable[str]) -> dict[str, str]:
    """A bundle's `params/` keys are the model paths themselves ({key: path}, identity)."""
    return {p: p for p in paths}
