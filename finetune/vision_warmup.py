"""Vision warm-up for from-scratch runs: train the SigLIP tower to recognise the study labels first.

PaliGemma starts from a SigLIP encoder that already sees; a model trained from scratch has none,
and its language model learns fluent reports long before it learns to look (its early reports
ignore the image). A short supervised stage fixes that: the vision tower plus projector, mean-
pooled, feed a linear multi-label classifier of the training studies' CheXpert labels (positive or
uncertain = 1), trained with sigmoid cross-entropy. Only the tower (and projector) weights are
kept; the classifier is dropped. The labels come from the training split only (MIMIC-CXR ships
them as mimic-cxr-2.0.0-chexpert.csv; `radreport synth` writes the same table).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from finetune import data as data_lib
from finetune.config import ConfigError


def label_matrix(examples: list[Any]) -> tuple[np.ndarray, list[str]]:
    """float32 [N, L] targets (1 for positive or uncertain) and the label names, sorted."""
    names = sorted({name for example in examples for name in (example.labels or {})})
    if not names:
        raise ConfigError(
            "vision_warmup needs CheXpert labels (mimic-cxr-2.0.0-chexpert.csv) for the training "
            "studies; set vision_warmup.steps=0 to train without it"
        )
    return label_rows(examples, names), names


def label_rows(examples: list[Any], names: list[str]) -> np.ndarray:
    """float32 [N, len(names)]: 1 where an example's label is positive or uncertain."""
    matrix = np.zeros((len(examples), len(names)), np.float32)
    for row, example in enumerate(examples):
        for col, name in enumerate(names):
            if (example.labels or {}).get(name) in (1.0, -1.0):
                matrix[row, col] = 1.0
    return matrix


def warm_up_vision(
    model_config: Any,
    img_params: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    augment: bool,
    log: Any = None,
    unroll: bool = False,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    deadline: float | None = None,
) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Train `img_params` (the `img/...` subtree) on (images, labels); returns them and a log.

    `deadline` (a `time.time()` value) stops the loop early, after the step that passes it.

    With `validation` = (images, labels) of held-out studies, the last log row also holds the
    classifier's micro-F1 over all labels there (`val_label_micro_f1`): whether the tower sees.
    """
    import jax
    import jax.numpy as jnp
    import optax
    from tqdm import tqdm

    from modeling.model import encode_image

    width = model_config.text.width
    rng = jax.random.PRNGKey(seed)
    head = {
        "kernel": jax.random.normal(rng, (width, labels.shape[1]), jnp.float32) / np.sqrt(width),
        "bias": jnp.zeros((labels.shape[1],), jnp.float32),
    }
    params = {"img": img_params, "head": head}
    schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), max(steps, 2),
                                                  lr * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, b2=0.98, weight_decay=0.0))
    opt_state = tx.init(params)
    prevalence = jnp.asarray(labels.mean(axis=0))

    def loss_fn(params: dict[str, Any], pixels: jax.Array, targets: jax.Array) -> jax.Array:
        tokens = encode_image(model_config, params["img"], pixels, unroll=unroll)  # [B, P, D]
        pooled = tokens.mean(axis=1)
        logits = pooled @ params["head"]["kernel"] + params["head"]["bias"]
        return optax.sigmoid_binary_cross_entropy(logits, targets).mean()

    @jax.jit
    def step(params, opt_state, pixels, targets):
        loss, grads = jax.value_and_grad(loss_fn)(params, pixels, targets)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    generator = np.random.default_rng(seed)
    order: list[int] = []
    history: list[dict[str, float]] = []
    baseline = float(optax.sigmoid_binary_cross_entropy(
        jnp.log(prevalence / (1 - prevalence + 1e-6) + 1e-6)[None], jnp.asarray(labels)).mean())
    running = None
    done = 0
    for index in tqdm(range(steps), desc="vision warm-up", unit="step"):
        if len(order) < batch_size:
            order.extend(generator.permutation(len(images)).tolist())
        rows, order = order[:batch_size], order[batch_size:]
        batch = np.asarray(images[rows])
        if augment:
            batch = np.stack([data_lib.augment({"image": image}, generator)["image"]
                              for image in batch])
        pixels = data_lib.to_pixels(batch)
        params, opt_state, loss = step(params, opt_state, pixels, labels[rows])
        done = index + 1
        over = deadline is not None and time.time() > deadline
        if (index + 1) % 20 == 0 or index + 1 == steps or over:
            value = float(loss)
            running = value if running is None else 0.7 * running + 0.3 * value
            history.append({"step": index + 1, "loss": value, "smoothed_loss": running,
                            "prior_only_loss": baseline})
        if over:  # at least one step runs, however late it starts
            break
    if validation is not None and history:
        val_images, val_labels = validation

        @jax.jit
        def predict(params, pixels):
            pooled = encode_image(model_config, params["img"], pixels, unroll=unroll).mean(axis=1)
            return pooled @ params["head"]["kernel"] + params["head"]["bias"] > 0

        predicted = np.concatenate([
            np.asarray(predict(params,
                               data_lib.to_pixels(np.asarray(val_images[i: i + batch_size]))))
            for i in range(0, len(val_images), batch_size)
        ])
        truth = val_labels > 0.5
        tp = float((predicted & truth).sum())
        history[-1]["val_label_micro_f1"] = 2 * tp / max(float(predicted.sum() + truth.sum()), 1.0)
    if log is not None and history:
        held_out = (f"; held-out label micro-F1 {history[-1]['val_label_micro_f1']:.3f}"
                    if "val_label_micro_f1" in history[-1] else "")
        cut = f" (stopped at the time budget, of {steps} planned)" if done < steps else ""
        log(f"vision warm-up: label loss {history[-1]['smoothed_loss']:.3f} "
            f"(label-frequency prior: {baseline:.3f}) after {done} steps{cut}{held_out}")
    return params["img"], history
