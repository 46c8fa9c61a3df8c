"""Model zoo: every family builds for 10/100 classes x GRAY/RGB, is QAT-able, and converts to
a fully int8 .tflite that uses only the firmware's ops; so does every shipped model."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np
import pytest

from digitrec import export
from digitrec.bench import MODELS_DIR
from digitrec.models import MODEL_NAMES, PC_ONLY, create_model, get_family, qat, weight_count
from digitrec.train import zoo

FIRMWARE_MODELS = [m for m in MODEL_NAMES if m not in PC_ONLY]
# Families whose graph depends on the class count beyond the width of the last Dense.
CLASS_DEPENDENT = {"dr"}


def test_every_module_registers_its_name():
    for name in MODEL_NAMES:
        assert get_family(name).name == name


def test_unknown_model_and_bad_args():
    with pytest.raises(KeyError, match="unknown model"):
        create_model("nope", 10, "gray")
    with pytest.raises(ValueError):
        create_model("v4", 12, "gray")
    with pytest.raises(ValueError):
        create_model("v4", 10, "bgr")


def _config_differences(a, b) -> list[tuple[str, str]]:
    """(layer type, config key) of every layer setting two models differ in; names aside."""
    if len(a.layers) != len(b.layers):
        return [("layers", f"{len(a.layers)} != {len(b.layers)}")]
    diffs = []
    for la, lb in zip(a.layers, b.layers, strict=True):
        ca, cb = ({k: v for k, v in layer.get_config().items() if k != "name"} for layer in (la, lb))
        if type(la) is not type(lb):
            diffs.append((type(la).__name__, type(lb).__name__))
        else:
            diffs += [(type(la).__name__, k) for k in sorted(ca.keys() | cb.keys()) if ca.get(k) != cb.get(k)]
    return diffs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_builds_all_configs(name):
    built = {}
    for classes in (10, 100):
        for color, ch in (("gray", 1), ("rgb", 3)):
            m = built[classes, color] = create_model(name, classes, color)
            assert tuple(m.input_shape) == (None, 32, 20, ch)
            assert tuple(m.output_shape) == (None, classes)
            n = weight_count(m)
            assert n == m.count_params() and n > 1000
            assert not any(type(layer).__name__ == "Lambda" for layer in m.layers)
            out = m(np.random.rand(2, 32, 20, ch).astype("float32"), training=False).numpy()
            np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-4)
    # what lets the conversion test below convert most families at one class count and colour only
    assert _config_differences(built[10, "gray"], built[10, "rgb"]) == [("InputLayer", "batch_input_shape")]
    if name not in CLASS_DEPENDENT:
        assert _config_differences(built[10, "gray"], built[100, "gray"]) == [("Dense", "units")]


def test_v4_has_about_51k_weights():
    assert 49_000 <= weight_count(create_model("v4", 10, "gray")) <= 53_000


def _has_dropout(qmodel) -> bool:
    return any(type(getattr(layer, "layer", layer)).__name__ == "Dropout" for layer in qmodel.layers)


@pytest.mark.parametrize(("name", "classes"), [("dr", 100), ("original_haverland", 10)])
def test_inference_graph_is_exact(name, classes):
    """Conv+BN pairs merge; a stand-alone (input) BN becomes an exact 1x1 depthwise conv;
    Dropout is left out (QAT would otherwise record its training-time activation ranges)."""
    m = create_model(name, classes, "gray")
    for layer in m.layers:  # non-trivial BN statistics
        if "batch_normalization" in layer.name:
            g, b, mu, var = layer.get_weights()
            r = np.random.default_rng(0)
            layer.set_weights([g * r.uniform(0.5, 2, g.shape), b + r.normal(0, 0.1, b.shape),
                               mu + r.normal(0, 0.1, mu.shape), var * r.uniform(0.5, 2, var.shape)])
    assert any(type(layer).__name__ == "Dropout" for layer in m.layers)
    folded = qat.inference_graph(m)
    assert not any(type(layer).__name__ in ("BatchNormalization", "Dropout") for layer in folded.layers)
    assert not _has_dropout(qat.quantize(m)) and _has_dropout(qat.quantize(m, keep_dropout=True))
    x = np.random.default_rng(1).random((4, 32, 20, 1)).astype("float32")
    np.testing.assert_allclose(m.predict(x, verbose=0), folded.predict(x, verbose=0), atol=1e-5)


def _convert(name: str, classes: int = 10, color: str = "gray") -> bytes:
    ch = 1 if color == "gray" else 3
    qmodel = qat.quantize(create_model(name, classes, color))
    rep = np.random.default_rng(0).integers(0, 256, (3, 32, 20, ch), dtype=np.uint8)
    return export.convert_int8(qmodel, rep)


# A conversion takes 7-35 s. Colour changes only the input layer, and the class count only the
# last Dense's width except in CLASS_DEPENDENT families (test_builds_all_configs checks both). So
# every family converts here in RGB at 100 classes (class-dependent ones at 10 as well), and the
# test after it checks the shipped conversions: every family in GRAY at 10 and 100, the RGB zoo.
CONVERSIONS = [(m, 100, "rgb") for m in FIRMWARE_MODELS] + [(m, 10, "rgb") for m in sorted(CLASS_DEPENDENT)]


@pytest.mark.parametrize(("name", "classes", "color"), CONVERSIONS)
def test_qat_converts_with_firmware_ops_only(name, classes, color):
    data = _convert(name, classes, color)
    ops = export.tflite_ops(data)
    export.check_ops(ops, name)  # raises naming the op
    assert "CONV_2D" in ops and "SOFTMAX" in ops
    iq, oq = export.io_quant(data)
    assert iq["dtype"] == oq["dtype"] == "int8" and oq["shape"] == [classes]
    assert iq["shape"] == [32, 20, 1 if color == "gray" else 3]


SHIPPED = [Path(MODELS_DIR) / f"{c}cls_{color.upper()}" / m for m, c, color in zoo()]


@pytest.mark.parametrize("model_dir", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_models_use_firmware_ops_only(model_dir):
    data = (model_dir / "model.tflite").read_bytes()
    ops = export.tflite_ops(data)
    export.check_ops(ops, str(model_dir))
    card = json.loads((model_dir / "card.json").read_text())
    assert card["ops"] == ops
    iq, oq = export.io_quant(data)
    assert iq["shape"] == [32, 20, 1 if card["color"] == "GRAY" else 3] and oq["shape"] == [card["classes"]]


@pytest.mark.parametrize(("classes", "budget_kb"), [(10, 64), (100, 100)])
def test_dr_fits_its_flash_budget(classes, budget_kb):
    assert len(_convert("dr", classes, "gray")) <= budget_kb * 1024
