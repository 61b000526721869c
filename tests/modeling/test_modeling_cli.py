"""`radreport convert` and `radreport generate` end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from modeling.convert import write_big_vision_npz
from radreport.cli import app
from tests.helpers.models import CONFIG_A, random_params


@pytest.mark.slow
def test_convert_npz_to_bundle_then_generate_from_a_png(tmp_path, tokenizer_path):
    npz = write_big_vision_npz(tmp_path / "pg.npz", random_params(CONFIG_A, 5))
    (tmp_path / "tokenizer.model").write_bytes(tokenizer_path.read_bytes())
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(npz), str(tmp_path / "bundle"),
                                 "--dtype", "float32", "--prompt", "findings"])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["prompt"] == "findings" and config["image_size"] == CONFIG_A.image_size

    image = (np.random.default_rng(0).uniform(0, 255, (64, 48))).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "cxr.png")
    result = runner.invoke(app, ["generate", str(tmp_path / "bundle"), str(tmp_path / "cxr.png"),
                                 "--max-new-tokens", "6", "--json"])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert line["image"].endswith("cxr.png") and isinstance(line["text"], str)
