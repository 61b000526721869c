"""Training data: MIMIC-CXR-layout examples, a preprocessed-image cache, grain pipelines.

The path of one example:

    radiology.mimic example ─▶ prompt (prefix) + target (suffix) text ─▶ token arrays (once)
                            └▶ frontal image, decoded + resized once ─▶ uint8 cache (.npy memmap)
    grain MapDataset: host shard ─▶ shuffle per epoch ─▶ repeat ─▶ (augment) ─▶ batch
    ─▶ a checkpointable iterator (its state is a small JSON dict saved with every checkpoint)

Images are stored as one uint8 channel of the model's preprocessed [-1, 1] image (chest X-rays
are grey), so a 448 px cache of 377k studies is ~75 GB and epochs never decode DICOM again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import DataSection


class DataError(RuntimeError):
    """The training data cannot be read or is unusable; the message says what to fix."""


@dataclass(frozen=True)
class TextPair:
    """One study as the model sees it in text: the prompt and the report to write."""

    study_id: str
    prefix: str
    target: str


def format_prompt(template: str, indication: str | None) -> str:
    """The prefix for a study: `template` with `{indication}` filled in (empty when missing).

    >>> format_prompt("INDICATION: {indication}", "Cough.")
    'INDICATION: Cough.'
    """
    text = template.replace("{indication}", (indication or "").strip())
    return " ".join(text.split())


def format_target(kind: str, findings: str | None, impression: str | None) -> str:
    """The report text the model learns to write (paper format: `FINDINGS: ... IMPRESSION: ...`).

    >>> format_target("findings_impression", "Clear lungs.", "Normal.")
    'FINDINGS: Clear lungs. IMPRESSION: Normal.'
    >>> format_target("findings", "Clear lungs.", "Normal.")
    'Clear lungs.'
    """
    findings = " ".join((findings or "").split())
    impression = " ".join((impression or "").split())
    if kind == "findings":
        return findings
    if kind == "impression":
        return impression
    parts = []
    if findings:
        parts.append(f"FINDINGS: {findings}")
    if impression:
        parts.append(f"IMPRESSION: {impression}")
    return " ".join(parts)


def read_split(config: DataSection, split: str, limit: int = 0) -> list[Any]:
    """The studies of one split that have an image and a non-empty target, in a stable order."""
    from radiology.mimic import read_dataset

    if not config.root:
        raise DataError(
            "no data: pass --data DIR (a MIMIC-CXR-layout tree, e.g. from `radreport synth`)")
    root = Path(config.root)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    examples = [
        example
        for example in read_dataset(root, split=split)
        if format_target(config.target, example.findings, example.impression)
    ]
    examples.sort(key=lambda example: str(example.study_id))
    if limit > 0:
        examples = examples[:limit]
    if not examples:
        raise DataError(
            f"split {split!r} of {root} has no studies with a {config.target} section; "
            "check the split name and that the reports have these sections"
        )
    return examples


def text_pairs(config: DataSection, examples: Sequence[Any]) -> list[TextPair]:
    """Prompt and target text of each example (config decides prompt template and target)."""
    return [
        TextPair(
            study_id=str(example.study_id),
            prefix=format_prompt(config.prompt, example.indication),
            target=format_target(config.target, example.findings, example.impression),
        )
        for example in examples
    ]


def image_cache(
    examples: Sequence[Any],
    image_size: int,
    cache_dir: Path,
    preprocess: Callable[[np.ndarray, int], np.ndarray],
    tag: str,
) -> np.ndarray:
    """A read-only uint8 memmap [N, S, S]: each example's preprocessed image, built on first use.

    The file name carries a fingerprint of the studies and the size, so a changed split or size
    builds a new cache instead of reading a stale one.
    """
    ids = "\n".join(str(example.study_id) for example in examples)
    fingerprint = hashlib.sha256(f"{image_size}\n{ids}".encode()).hexdigest()[:16]
    path = cache_dir / f"{tag}-{image_size}px-{fingerprint}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npy")
    array = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.uint8, shape=(len(examples), image_size, image_size)
    )
    from tqdm import tqdm

    for i, example in enumerate(tqdm(examples, desc=f"caching {tag} images", unit="img")):
        image = preprocess(example.load_image(), image_size)
        array[i] = to_uint8(np.asarray(image))
    array.flush()
    del array
    os.replace(tmp, path)
    return np.load(path, mmap_mode="r")


def to_uint8(image: np.ndarray) -> np.ndarray:
    """A preprocessed [-1, 1] image (HxW or HxWxC, grey) as uint8 HxW."""
    if image.ndim == 3:
        image = image[..., 0]
    return np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S] cache rows as float32 [N, S, S, 3] in [-1, 1], the model's input."""
    pixels = images.astype(np.float32) / 127.5 - 1.0
    return np.repeat(pixels[..., None], 3, axis=-1)


def tokenize_pairs(
    tokenizer: Any, pairs: Sequence[TextPair], text_len: int
) -> dict[str, np.ndarray]:
    """Token arrays [N, text_len] of the pairs: input_ids, token_type_ids, input_mask, loss_mask."""
    rows = [tokenizer.training_example(pair.prefix, pair.target, text_len) for pair in pairs]
    names = ("input_ids", "token_type_ids", "input_mask", "loss_mask")
    return {
        name: np.stack([np.asarray(row[i]) for row in rows]).astype(np.int32)
        for i, name in enumerate(names)
    }


class ExampleSource:
    """Random access to cached training examples (what grain's MapDataset reads)."""

    def __init__(self, images: np.ndarray, tokens: dict[str, np.ndarray]) -> None:
        self.images = images
        self.tokens = tokens

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        row = {name: array[index] for name, array in self.tokens.items()}
        row["image"] = np.asarray(self.images[index])
        return row


def augment(row: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Label-preserving augmentation: a random 90-100% crop resized back, contrast jitter."""
    image = row["image"].astype(np.float32)
    size = image.shape[0]
    crop = int(round(size * rng.uniform(0.9, 1.0)))
    top = int(rng.integers(0, size - crop + 1))
    left = int(rng.integers(0, size - crop + 1))
    patch = image[top : top + crop, left : left + crop]
    # Nearest-neighbour resize back to `size` (cheap; keeps the pipeline free of extra deps).
    index = (np.arange(size) * crop / size).astype(np.int64)
    image = patch[index][:, index]
    mean = image.mean()
    image = (image - mean) * rng.uniform(0.9, 1.1) + mean + rng.uniform(-10, 10)
    out = dict(row)
    out["image"] = np.clip(image, 0, 255).astype(np.uint8)
    return out


def train_dataset(
    source: ExampleSource,
    local_batch_size: int,
    seed: int,
    process_index: int,
    process_count: int,
    with_augmentation: bool,
) -> Any:
    """The training grain MapDataset of this host: its block of each global batch.

    Every host sees the same stream (all examples, reshuffled each epoch, augmented per position)
    cut into blocks of `local_batch_size`; host h reads blocks h, h + hosts, h + 2 hosts, ...
    Global batch i is thus blocks i * hosts ... (i + 1) * hosts - 1 in host order, the rows a
    single host would put in batch i: any number of hosts trains on the same batches, and a
    host loads only its own rows.
    """
    import grain

    if len(source) < process_count * local_batch_size:
        raise DataError(
            f"{len(source)} training examples cannot fill a batch of {local_batch_size} on each of "
            f"{process_count} hosts; lower optim.batch_size or add data"
        )
    dataset = grain.MapDataset.source(source).seed(seed).shuffle().repeat(None)
    if with_augmentation:
        dataset = dataset.random_map(augment)
    return dataset.batch(local_batch_size, drop_remainder=True)[process_index::process_count]


class TrainIterator:
    """Infinite training batches with a state that restores the exact position (`get_state`)."""

    def __init__(self, dataset: Any) -> None:
        import grain

        self._dataset = dataset
        read_options = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)
        self._iter = iter(dataset.to_iter_dataset(read_options))

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def get_state(self) -> dict[str, Any]:
        """A JSON-serialisable position in the stream."""
        return json.loads(json.dumps(self._iter.get_state()))

    def set_state(self, state: dict[str, Any] | bytes) -> None:
        """Continue from a position returned by `get_state` (or its JSON bytes)."""
        if isinstance(state, bytes | str):
            state = json.loads(state)
        self._iter.set_state(state)

    def start_prefetch(self) -> None:
        """Called by grain's checkpoint handler after a restore; prefetching starts lazily here."""

