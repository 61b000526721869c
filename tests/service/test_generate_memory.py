"""GENERATE_DEVICE_MEMORY: the generate worker lowers its batch to what the accelerator holds."""

from __future__ import annotations

import pytest

from modeling.memory import MemoryPlanError, generate_memory
from service.worker.model import DraftModel
from tests.helpers.service import build_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return build_tiny_bundle(tmp_path_factory.mktemp("memory"))


@pytest.mark.slow
def test_the_worker_batch_is_the_largest_that_fits_the_device_memory(bundle) -> None:
    plain = DraftModel(bundle, batch_size=8)
    ids = plain.model.tokenizer.prompt_ids(plain.prompt)
    plan = plain.model.plan(1, len(ids), plain.max_new_tokens)
    peaks = {b: generate_memory(plain.model.config, b, plan.prompt_len, plan.new_tokens,
                                plain.model.params).peak for b in (2, 4)}
    memory = str(int((peaks[2] + peaks[4]) / 2 / 0.9))  # 2 rows fit 90% of it, 4 do not
    fitted = DraftModel(bundle, batch_size=8, device_memory=memory)
    assert fitted.batch_size == 2 and fitted.buckets == [1, 2]
    assert DraftModel(bundle, batch_size=8, device_memory="100GB").batch_size == 8


def test_a_device_too_small_for_one_study_stops_the_worker_with_the_reason(bundle) -> None:
    with pytest.raises(MemoryPlanError, match="even one study does not fit"):
        DraftModel(bundle, batch_size=8, device_memory="100kB")
